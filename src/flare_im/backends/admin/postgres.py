"""The admin port on PostgreSQL (the database of the relational adapter); contract in base.py.

The ``admin`` component migrates itself when the adapter opens (its own advisory lock makes concurrent nodes
safe); ``flare migrate`` covers the relational component.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from flare_im.backends.admin.base import DELETED, AdminKey, AuditEntry, Ban, Broadcast, NodeStats
from flare_im.backends.migrations import Migration, PostgresMigrator, Schema

_STEPS: tuple[str, ...] = (
    """CREATE TABLE admin_keys (
    key_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL, scope TEXT NOT NULL, note TEXT NOT NULL,
    created_at BIGINT NOT NULL, created_by TEXT NOT NULL, revoked_at BIGINT NOT NULL)""",
    """CREATE TABLE admin_audit (
    entry_id BIGSERIAL PRIMARY KEY, ts BIGINT NOT NULL, key_id TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, status INTEGER NOT NULL, detail TEXT NOT NULL, ip TEXT NOT NULL)""",
    "CREATE INDEX admin_audit_ts ON admin_audit (ts)",
    "CREATE INDEX admin_audit_key ON admin_audit (key_id, ts)",
    """CREATE TABLE admin_bans (
    uid TEXT PRIMARY KEY, kind TEXT NOT NULL, reason TEXT NOT NULL, created_at BIGINT NOT NULL,
    key_id TEXT NOT NULL)""",
    "CREATE TABLE admin_revisions (name TEXT PRIMARY KEY, revision BIGINT NOT NULL)",
    "INSERT INTO admin_revisions (name, revision) VALUES ('bans', 0)",
    "CREATE TABLE admin_daily_active (day TEXT NOT NULL, uid TEXT NOT NULL, PRIMARY KEY (day, uid))",
    """CREATE TABLE admin_broadcasts (
    broadcast_id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, key_id TEXT NOT NULL, body TEXT NOT NULL,
    target TEXT NOT NULL, recipients BIGINT NOT NULL, delivered BIGINT NOT NULL, state TEXT NOT NULL)""",
    "CREATE INDEX admin_broadcasts_created ON admin_broadcasts (created_at)",
    """CREATE TABLE admin_node_stats (
    node TEXT PRIMARY KEY, at BIGINT NOT NULL, connections BIGINT NOT NULL, users BIGINT NOT NULL,
    events BIGINT NOT NULL, events_per_s DOUBLE PRECISION NOT NULL)""",
)
SCHEMA = Schema("admin", (Migration(1, "admin keys, audit log, bans, activity, broadcasts, node stats", _STEPS),))

_KEY_COLS = "key_id, key_hash, scope, note, created_at, created_by, revoked_at"
_AUDIT_COLS = "entry_id, ts, key_id, action, target, status, detail, ip"
_BAN_COLS = "uid, kind, reason, created_at, key_id"
_BROADCAST_COLS = "broadcast_id, created_at, key_id, body, target, recipients, delivered, state"
_BUMP = "UPDATE admin_revisions SET revision = revision + 1 WHERE name = 'bans' RETURNING revision"


class PostgresAdminStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, max_connections: int = 4) -> PostgresAdminStore:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=max_connections)
        try:
            async with pool.acquire() as conn:
                await PostgresMigrator(conn, SCHEMA).apply()
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    # ---------------------------------------------------------------- keys

    async def create_key(self, key: AdminKey) -> None:
        k = key
        try:
            await self._pool.execute(
                f"INSERT INTO admin_keys ({_KEY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                k.key_id,
                k.key_hash,
                k.scope,
                k.note,
                k.created_at,
                k.created_by,
                k.revoked_at,
            )
        except asyncpg.UniqueViolationError:
            raise KeyError(k.key_id) from None

    async def get_key(self, key_id: str) -> AdminKey | None:
        row = await self._pool.fetchrow(f"SELECT {_KEY_COLS} FROM admin_keys WHERE key_id = $1", key_id)
        return AdminKey(*row) if row else None

    async def keys(self) -> list[AdminKey]:
        rows = await self._pool.fetch(f"SELECT {_KEY_COLS} FROM admin_keys ORDER BY created_at")
        return [AdminKey(*r) for r in rows]

    async def revoke_key(self, key_id: str, at: int) -> bool:
        status = await self._pool.execute(
            "UPDATE admin_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at = 0", at, key_id
        )
        return str(status).endswith(" 1")

    # ---------------------------------------------------------------- audit

    async def append_audit(self, entry: AuditEntry) -> int:
        e = entry
        entry_id = await self._pool.fetchval(
            "INSERT INTO admin_audit (ts, key_id, action, target, status, detail, ip)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING entry_id",
            e.ts,
            e.key_id,
            e.action,
            e.target,
            e.status,
            e.detail,
            e.ip,
        )
        return int(entry_id)

    async def audit(
        self, *, since: int, until: int, key_id: str | None, before_id: int, limit: int
    ) -> list[AuditEntry]:
        sql = f"SELECT {_AUDIT_COLS} FROM admin_audit WHERE ts >= $1 AND ts < $2 AND entry_id < $3"
        params: list[Any] = [since, until, before_id]
        if key_id is not None:
            sql += " AND key_id = $4"
            params.append(key_id)
        sql += f" ORDER BY entry_id DESC LIMIT ${len(params) + 1}"
        rows = await self._pool.fetch(sql, *params, limit)
        return [AuditEntry(*r) for r in rows]

    # ---------------------------------------------------------------- bans

    async def put_ban(self, ban: Ban) -> int:
        b = ban
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT revision FROM admin_revisions WHERE name = 'bans' FOR UPDATE")
            kind = await conn.fetchval("SELECT kind FROM admin_bans WHERE uid = $1", b.uid)
            if kind == DELETED and b.kind != DELETED:
                return int(await conn.fetchval("SELECT revision FROM admin_revisions WHERE name = 'bans'"))
            await conn.execute(
                f"INSERT INTO admin_bans ({_BAN_COLS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (uid) DO UPDATE SET"
                " kind = EXCLUDED.kind, reason = EXCLUDED.reason, created_at = EXCLUDED.created_at,"
                " key_id = EXCLUDED.key_id",
                b.uid,
                b.kind,
                b.reason,
                b.created_at,
                b.key_id,
            )
            return int(await conn.fetchval(_BUMP))

    async def delete_ban(self, uid: str) -> int | None:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute("DELETE FROM admin_bans WHERE uid = $1 AND kind != $2", uid, DELETED)
            if not str(status).endswith(" 1"):
                return None
            return int(await conn.fetchval(_BUMP))

    async def bans(self) -> list[Ban]:
        return [Ban(*r) for r in await self._pool.fetch(f"SELECT {_BAN_COLS} FROM admin_bans")]

    async def bans_revision(self) -> int:
        value = await self._pool.fetchval("SELECT revision FROM admin_revisions WHERE name = 'bans'")
        return int(value or 0)

    # ---------------------------------------------------------------- accounts

    async def user_ids(self, after: str, limit: int) -> list[str]:
        rows = await self._pool.fetch("SELECT uid FROM users WHERE uid > $1 ORDER BY uid LIMIT $2", after, limit)
        return [r[0] for r in rows]

    async def erase_user(self, uid: str) -> bool:
        status = await self._pool.execute(
            "UPDATE users SET display_name = '', avatar = '', username = NULL, password_hash = NULL WHERE uid = $1",
            uid,
        )
        return str(status).endswith(" 1")

    # ---------------------------------------------------------------- activity

    async def record_active(self, day: str, uids: Sequence[str]) -> None:
        await self._pool.execute(
            "INSERT INTO admin_daily_active (day, uid) SELECT $1, u FROM unnest($2::text[]) AS u"
            " ON CONFLICT DO NOTHING",
            day,
            list(uids),
        )

    async def daily_active(self, first: str, last: str) -> tuple[dict[str, int], int]:
        rows = await self._pool.fetch(
            "SELECT day, COUNT(*) FROM admin_daily_active WHERE day >= $1 AND day <= $2 GROUP BY day", first, last
        )
        total = await self._pool.fetchval(
            "SELECT COUNT(DISTINCT uid) FROM admin_daily_active WHERE day >= $1 AND day <= $2", first, last
        )
        return {r[0]: int(r[1]) for r in rows}, int(total)

    # ---------------------------------------------------------------- broadcasts

    async def put_broadcast(self, broadcast: Broadcast) -> None:
        b = broadcast
        await self._pool.execute(
            f"INSERT INTO admin_broadcasts ({_BROADCAST_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (broadcast_id) DO UPDATE SET recipients = EXCLUDED.recipients,"
            " delivered = EXCLUDED.delivered, state = EXCLUDED.state",
            b.broadcast_id,
            b.created_at,
            b.key_id,
            b.body,
            b.target,
            b.recipients,
            b.delivered,
            b.state,
        )

    async def get_broadcast(self, broadcast_id: str) -> Broadcast | None:
        row = await self._pool.fetchrow(
            f"SELECT {_BROADCAST_COLS} FROM admin_broadcasts WHERE broadcast_id = $1", broadcast_id
        )
        return Broadcast(*row) if row else None

    async def broadcasts(self, limit: int) -> list[Broadcast]:
        rows = await self._pool.fetch(
            f"SELECT {_BROADCAST_COLS} FROM admin_broadcasts ORDER BY created_at DESC, broadcast_id DESC LIMIT $1",
            limit,
        )
        return [Broadcast(*r) for r in rows]

    async def broadcast_progress(
        self, broadcast_id: str, *, recipients: int = 0, delivered: int = 0, state: str | None = None
    ) -> None:
        await self._pool.execute(
            "UPDATE admin_broadcasts SET recipients = recipients + $1, delivered = delivered + $2,"
            " state = coalesce($3, state) WHERE broadcast_id = $4",
            recipients,
            delivered,
            state,
            broadcast_id,
        )

    # ---------------------------------------------------------------- node stats

    async def put_node_stats(self, stats: NodeStats) -> None:
        s = stats
        await self._pool.execute(
            "INSERT INTO admin_node_stats (node, at, connections, users, events, events_per_s)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (node) DO UPDATE SET at = EXCLUDED.at,"
            " connections = EXCLUDED.connections, users = EXCLUDED.users, events = EXCLUDED.events,"
            " events_per_s = EXCLUDED.events_per_s",
            s.node,
            s.at,
            s.connections,
            s.users,
            s.events,
            s.events_per_s,
        )

    async def node_stats(self) -> list[NodeStats]:
        rows = await self._pool.fetch(
            "SELECT node, at, connections, users, events, events_per_s FROM admin_node_stats ORDER BY node"
        )
        return [NodeStats(*r) for r in rows]
