"""The admin port on SQLite (the embedded database file the relational adapter uses); contract in base.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from flare_im.backends.admin.base import DELETED, AdminKey, AuditEntry, Ban, Broadcast, NodeStats
from flare_im.backends.migrations import Migration, Schema
from flare_im.backends.sqlite_db import SqliteDatabase

_STEPS: tuple[str, ...] = (
    """CREATE TABLE admin_keys (
    key_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL, scope TEXT NOT NULL, note TEXT NOT NULL,
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL, revoked_at INTEGER NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE admin_audit (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, key_id TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, status INTEGER NOT NULL, detail TEXT NOT NULL, ip TEXT NOT NULL)""",
    "CREATE INDEX admin_audit_ts ON admin_audit (ts)",
    "CREATE INDEX admin_audit_key ON admin_audit (key_id, ts)",
    """CREATE TABLE admin_bans (
    uid TEXT PRIMARY KEY, kind TEXT NOT NULL, reason TEXT NOT NULL, created_at INTEGER NOT NULL,
    key_id TEXT NOT NULL) WITHOUT ROWID""",
    "CREATE TABLE admin_revisions (name TEXT PRIMARY KEY, revision INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO admin_revisions (name, revision) VALUES ('bans', 0)",
    "CREATE TABLE admin_daily_active (day TEXT NOT NULL, uid TEXT NOT NULL, PRIMARY KEY (day, uid)) WITHOUT ROWID",
    """CREATE TABLE admin_broadcasts (
    broadcast_id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, key_id TEXT NOT NULL, body TEXT NOT NULL,
    target TEXT NOT NULL, recipients INTEGER NOT NULL, delivered INTEGER NOT NULL, state TEXT NOT NULL)""",
    "CREATE INDEX admin_broadcasts_created ON admin_broadcasts (created_at)",
    """CREATE TABLE admin_node_stats (
    node TEXT PRIMARY KEY, at INTEGER NOT NULL, connections INTEGER NOT NULL, users INTEGER NOT NULL,
    events INTEGER NOT NULL, events_per_s REAL NOT NULL) WITHOUT ROWID""",
)
SCHEMA = Schema("admin", (Migration(1, "admin keys, audit log, bans, activity, broadcasts, node stats", _STEPS),))

_KEY_COLS = "key_id, key_hash, scope, note, created_at, created_by, revoked_at"
_AUDIT_COLS = "entry_id, ts, key_id, action, target, status, detail, ip"
_BAN_COLS = "uid, kind, reason, created_at, key_id"
_BROADCAST_COLS = "broadcast_id, created_at, key_id, body, target, recipients, delivered, state"


class SqliteAdminStore:
    def __init__(self, db: SqliteDatabase) -> None:
        """Migrates the ``admin`` component on the writer connection: call before ``db.start()``."""
        self._db = db
        db.apply_migrations(SCHEMA)

    async def close(self) -> None:
        """The database is closed by its owner."""

    # ---------------------------------------------------------------- keys

    async def create_key(self, key: AdminKey) -> None:
        k = key

        def op(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    f"INSERT INTO admin_keys ({_KEY_COLS}) VALUES (?,?,?,?,?,?,?)",
                    (k.key_id, k.key_hash, k.scope, k.note, k.created_at, k.created_by, k.revoked_at),
                )
            except sqlite3.IntegrityError:
                raise KeyError(k.key_id) from None

        await self._db.write(op)

    async def get_key(self, key_id: str) -> AdminKey | None:
        row = self._db.fetchone(f"SELECT {_KEY_COLS} FROM admin_keys WHERE key_id = ?", (key_id,))
        return AdminKey(*row) if row else None

    async def keys(self) -> list[AdminKey]:
        return [AdminKey(*r) for r in self._db.fetchall(f"SELECT {_KEY_COLS} FROM admin_keys ORDER BY created_at")]

    async def revoke_key(self, key_id: str, at: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("UPDATE admin_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at = 0", (at, key_id))
            return cur.rowcount > 0

        return bool(await self._db.write(op))

    # ---------------------------------------------------------------- audit

    async def append_audit(self, entry: AuditEntry) -> int:
        e = entry

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO admin_audit (ts, key_id, action, target, status, detail, ip) VALUES (?,?,?,?,?,?,?)",
                (e.ts, e.key_id, e.action, e.target, e.status, e.detail, e.ip),
            )
            return int(cur.lastrowid or 0)

        return int(await self._db.write(op))

    async def audit(
        self, *, since: int, until: int, key_id: str | None, before_id: int, limit: int
    ) -> list[AuditEntry]:
        sql = f"SELECT {_AUDIT_COLS} FROM admin_audit WHERE ts >= ? AND ts < ? AND entry_id < ?"
        params: list[Any] = [since, until, before_id]
        if key_id is not None:
            sql += " AND key_id = ?"
            params.append(key_id)
        rows = self._db.fetchall(sql + " ORDER BY entry_id DESC LIMIT ?", (*params, limit))
        return [AuditEntry(*r) for r in rows]

    # ---------------------------------------------------------------- bans

    async def put_ban(self, ban: Ban) -> int:
        b = ban

        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT kind FROM admin_bans WHERE uid = ?", (b.uid,)).fetchone()
            if row is not None and row[0] == DELETED and b.kind != DELETED:
                return _revision(conn)
            conn.execute(
                f"INSERT OR REPLACE INTO admin_bans ({_BAN_COLS}) VALUES (?,?,?,?,?)",
                (b.uid, b.kind, b.reason, b.created_at, b.key_id),
            )
            return _bump(conn)

        return int(await self._db.write(op))

    async def delete_ban(self, uid: str) -> int | None:
        def op(conn: sqlite3.Connection) -> int | None:
            cur = conn.execute("DELETE FROM admin_bans WHERE uid = ? AND kind != ?", (uid, DELETED))
            return _bump(conn) if cur.rowcount else None

        result: int | None = await self._db.write(op)
        return result

    async def bans(self) -> list[Ban]:
        return [Ban(*r) for r in self._db.fetchall(f"SELECT {_BAN_COLS} FROM admin_bans")]

    async def bans_revision(self) -> int:
        row = self._db.fetchone("SELECT revision FROM admin_revisions WHERE name = 'bans'")
        return int(row[0]) if row else 0

    # ---------------------------------------------------------------- accounts

    async def user_ids(self, after: str, limit: int) -> list[str]:
        rows = self._db.fetchall("SELECT uid FROM users WHERE uid > ? ORDER BY uid LIMIT ?", (after, limit))
        return [r[0] for r in rows]

    async def erase_user(self, uid: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE users SET display_name = '', avatar = '', username = NULL, password_hash = NULL WHERE uid = ?",
                (uid,),
            )
            return cur.rowcount > 0

        return bool(await self._db.write(op))

    # ---------------------------------------------------------------- activity

    async def record_active(self, day: str, uids: Sequence[str]) -> None:
        rows = [(day, u) for u in uids]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR IGNORE INTO admin_daily_active (day, uid) VALUES (?, ?)", rows)

        await self._db.write(op)

    async def daily_active(self, first: str, last: str) -> tuple[dict[str, int], int]:
        rows = self._db.fetchall(
            "SELECT day, COUNT(*) FROM admin_daily_active WHERE day >= ? AND day <= ? GROUP BY day", (first, last)
        )
        total = self._db.fetchone(
            "SELECT COUNT(DISTINCT uid) FROM admin_daily_active WHERE day >= ? AND day <= ?", (first, last)
        )
        return {r[0]: int(r[1]) for r in rows}, int(total[0])

    # ---------------------------------------------------------------- broadcasts

    async def put_broadcast(self, broadcast: Broadcast) -> None:
        b = broadcast

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO admin_broadcasts ({_BROADCAST_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                (b.broadcast_id, b.created_at, b.key_id, b.body, b.target, b.recipients, b.delivered, b.state),
            )

        await self._db.write(op)

    async def get_broadcast(self, broadcast_id: str) -> Broadcast | None:
        row = self._db.fetchone(
            f"SELECT {_BROADCAST_COLS} FROM admin_broadcasts WHERE broadcast_id = ?", (broadcast_id,)
        )
        return Broadcast(*row) if row else None

    async def broadcasts(self, limit: int) -> list[Broadcast]:
        rows = self._db.fetchall(
            f"SELECT {_BROADCAST_COLS} FROM admin_broadcasts ORDER BY created_at DESC, broadcast_id DESC LIMIT ?",
            (limit,),
        )
        return [Broadcast(*r) for r in rows]

    async def broadcast_progress(
        self, broadcast_id: str, *, recipients: int = 0, delivered: int = 0, state: str | None = None
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE admin_broadcasts SET recipients = recipients + ?, delivered = delivered + ?,"
                " state = coalesce(?, state) WHERE broadcast_id = ?",
                (recipients, delivered, state, broadcast_id),
            )

        await self._db.write(op)

    # ---------------------------------------------------------------- node stats

    async def put_node_stats(self, stats: NodeStats) -> None:
        s = stats

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO admin_node_stats (node, at, connections, users, events, events_per_s)"
                " VALUES (?,?,?,?,?,?)",
                (s.node, s.at, s.connections, s.users, s.events, s.events_per_s),
            )

        await self._db.write(op)

    async def node_stats(self) -> list[NodeStats]:
        rows = self._db.fetchall(
            "SELECT node, at, connections, users, events, events_per_s FROM admin_node_stats ORDER BY node"
        )
        return [NodeStats(*r) for r in rows]


def _bump(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE admin_revisions SET revision = revision + 1 WHERE name = 'bans'")
    return _revision(conn)


def _revision(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT revision FROM admin_revisions WHERE name = 'bans'").fetchone()[0])
