"""The safety port on PostgreSQL (distributed); its own migration component, applied by ``flare migrate``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from flare_im.backends.migrations import Migration, PostgresMigrator, Schema, check_version
from flare_im.backends.safety.base import (
    OPEN,
    PENDING,
    Block,
    GroupMute,
    Invite,
    JoinRequest,
    Report,
    SpamDecision,
)

_BUMP = "UPDATE safety_revision SET revision = revision + 1"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "blocks between users",
        (
            "CREATE TABLE safety_revision (id INT PRIMARY KEY CHECK (id = 1), revision BIGINT NOT NULL)",
            "INSERT INTO safety_revision VALUES (1, 0)",
            """CREATE TABLE blocks (
            uid TEXT NOT NULL, target TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (uid, target))""",
            "CREATE TABLE block_lists (uid TEXT PRIMARY KEY, version BIGINT NOT NULL)",
        ),
    ),
    Migration(
        2,
        "group mutes",
        (
            """CREATE TABLE group_mutes (
            conv TEXT NOT NULL, uid TEXT NOT NULL, until BIGINT NOT NULL, actor TEXT NOT NULL,
            created_at BIGINT NOT NULL, PRIMARY KEY (conv, uid))""",
        ),
    ),
)

REPORT_COLS = (
    "report_id, reporter, target, conv, seq, reason, note, state, created_at, resolved_at, resolver, action,"
    " resolution, snapshot"
)
MIGRATIONS = (
    *MIGRATIONS,
    Migration(
        3,
        "reports",
        (
            """CREATE TABLE reports (
            report_id TEXT PRIMARY KEY, reporter TEXT NOT NULL, target TEXT NOT NULL, conv TEXT NOT NULL,
            seq BIGINT NOT NULL, reason TEXT NOT NULL, note TEXT NOT NULL, state TEXT NOT NULL,
            created_at BIGINT NOT NULL, resolved_at BIGINT NOT NULL, resolver TEXT NOT NULL, action TEXT NOT NULL,
            resolution TEXT NOT NULL, snapshot TEXT NOT NULL)""",
            "CREATE INDEX reports_state ON reports (state, created_at)",
            "CREATE INDEX reports_reporter ON reports (reporter, created_at)",
            # One open report per reporter, user and message: a report sent twice (or concurrently) is one.
            "CREATE UNIQUE INDEX reports_open ON reports (reporter, target, conv, seq) WHERE state = 'open'",
        ),
    ),
    Migration(
        4,
        "invite links, join requests, group member limits",
        (
            """CREATE TABLE group_invites (
            code TEXT PRIMARY KEY, conv TEXT NOT NULL, creator TEXT NOT NULL, created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL, max_uses INT NOT NULL, uses INT NOT NULL, approval BOOLEAN NOT NULL,
            revoked BOOLEAN NOT NULL)""",
            "CREATE INDEX group_invites_conv ON group_invites (conv, created_at)",
            """CREATE TABLE join_requests (
            conv TEXT NOT NULL, uid TEXT NOT NULL, code TEXT NOT NULL, note TEXT NOT NULL, state TEXT NOT NULL,
            created_at BIGINT NOT NULL, decided_at BIGINT NOT NULL, decider TEXT NOT NULL, PRIMARY KEY (conv, uid))""",
            "CREATE TABLE group_limits (conv TEXT PRIMARY KEY, max_members INT NOT NULL)",
        ),
    ),
    Migration(
        5,
        "anti-spam: link rules, decisions, automatic mutes",
        (
            "CREATE TABLE spam_domains (domain TEXT PRIMARY KEY, policy TEXT NOT NULL)",
            """CREATE TABLE spam_decisions (
            decision_id BIGSERIAL PRIMARY KEY, uid TEXT NOT NULL, rule TEXT NOT NULL, action TEXT NOT NULL,
            reason TEXT NOT NULL, conv TEXT NOT NULL, created_at BIGINT NOT NULL)""",
            "CREATE INDEX spam_decisions_user ON spam_decisions (uid, created_at)",
            "CREATE TABLE spam_mutes (uid TEXT PRIMARY KEY, until BIGINT NOT NULL)",
        ),
    ),
)

SCHEMA = Schema("safety", MIGRATIONS)
INVITE_COLS = "code, conv, creator, created_at, expires_at, max_uses, uses, approval, revoked"
REQUEST_COLS = "conv, uid, code, note, state, created_at, decided_at, decider"


@dataclass(frozen=True, slots=True)
class PostgresSafetyConfig:
    url: str
    min_connections: int = 1
    max_connections: int = 4  # changes are rare and reads are cached: a small pool


class PostgresSafety:
    """Every safety store over one asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, config: PostgresSafetyConfig, *, check_schema: bool = True) -> PostgresSafety:
        """Connect; raise SchemaError (run ``flare migrate``) if the safety schema is not the code's."""
        pool = await asyncpg.create_pool(config.url, min_size=config.min_connections, max_size=config.max_connections)
        try:
            if check_schema:
                async with pool.acquire() as conn:
                    version = await PostgresMigrator(conn, SCHEMA).current_version()
                check_version(SCHEMA, version, "the PostgreSQL database")
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def revision(self) -> int:
        value = await self._pool.fetchval("SELECT revision FROM safety_revision WHERE id = 1")
        return int(value or 0)

    # ---------------------------------------------------------------- blocks

    async def all_blocks(self) -> list[Block]:
        rows = await self._pool.fetch("SELECT uid, target, created_at FROM blocks")
        return [Block(*row) for row in rows]

    async def blocks_of(self, uid: str) -> tuple[list[Block], int]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT uid, target, created_at FROM blocks WHERE uid = $1 ORDER BY created_at, target", uid
            )
            version = await conn.fetchval("SELECT version FROM block_lists WHERE uid = $1", uid)
        return [Block(*row) for row in rows], int(version or 0)

    async def set_block(self, uid: str, target: str, blocked: bool, at: int) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            if blocked:
                status = await conn.execute(
                    "INSERT INTO blocks (uid, target, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    uid,
                    target,
                    at,
                )
            else:
                status = await conn.execute("DELETE FROM blocks WHERE uid = $1 AND target = $2", uid, target)
            if status.endswith(" 0"):
                return 0
            await conn.execute(_BUMP)
            version = await conn.fetchval(
                "INSERT INTO block_lists (uid, version) VALUES ($1, $2) ON CONFLICT (uid) DO UPDATE SET"
                " version = greatest(excluded.version, block_lists.version + 1) RETURNING version",
                uid,
                at,
            )
            return int(version)

    # ---------------------------------------------------------------- mutes

    async def all_mutes(self, now: int) -> list[GroupMute]:
        rows = await self._pool.fetch(
            "SELECT conv, uid, until, actor, created_at FROM group_mutes WHERE until > $1", now
        )
        return [GroupMute(*row) for row in rows]

    async def mutes_of(self, conv: str, now: int) -> list[GroupMute]:
        rows = await self._pool.fetch(
            "SELECT conv, uid, until, actor, created_at FROM group_mutes WHERE conv = $1 AND until > $2 ORDER BY uid",
            conv,
            now,
        )
        return [GroupMute(*row) for row in rows]

    async def set_mute(self, mute: GroupMute) -> None:
        m = mute
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO group_mutes (conv, uid, until, actor, created_at) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (conv, uid) DO UPDATE SET until = excluded.until, actor = excluded.actor,"
                " created_at = excluded.created_at",
                m.conv,
                m.uid,
                m.until,
                m.actor,
                m.created_at,
            )
            await conn.execute(_BUMP)

    async def remove_mute(self, conv: str, uid: str) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute("DELETE FROM group_mutes WHERE conv = $1 AND uid = $2", conv, uid)
            if status.endswith(" 0"):
                return False
            await conn.execute(_BUMP)
            return True

    # ---------------------------------------------------------------- reports

    async def add_report(self, report: Report) -> Report:
        r = report
        async with self._pool.acquire() as conn:
            inserted = await conn.fetchval(
                f"INSERT INTO reports ({REPORT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
                " ON CONFLICT DO NOTHING RETURNING report_id",
                r.report_id, r.reporter, r.target, r.conv, r.seq, r.reason, r.note, r.state, r.created_at,
                r.resolved_at, r.resolver, r.action, r.resolution, r.snapshot,
            )  # fmt: skip
            if inserted is not None:
                return r
            row = await conn.fetchrow(
                f"SELECT {REPORT_COLS} FROM reports WHERE reporter = $1 AND target = $2 AND conv = $3 AND seq = $4"
                " AND state = $5",
                r.reporter,
                r.target,
                r.conv,
                r.seq,
                OPEN,
            )
        if row is None:  # the open one was closed meanwhile: report again
            return await self.add_report(report)
        return Report(*row)

    async def get_report(self, report_id: str) -> Report | None:
        row = await self._pool.fetchrow(f"SELECT {REPORT_COLS} FROM reports WHERE report_id = $1", report_id)
        return Report(*row) if row else None

    async def reports(self, *, state: str = "", reporter: str = "", before: int = 0, limit: int = 100) -> list[Report]:
        where, params = ["created_at < $1"], list[Any]([before or 2**62])
        if state:
            params.append(state)
            where.append(f"state = ${len(params)}")
        if reporter:
            params.append(reporter)
            where.append(f"reporter = ${len(params)}")
        params.append(limit)
        rows = await self._pool.fetch(
            f"SELECT {REPORT_COLS} FROM reports WHERE {' AND '.join(where)} ORDER BY created_at DESC, report_id"
            f" LIMIT ${len(params)}",
            *params,
        )
        return [Report(*row) for row in rows]

    async def resolve_report(self, report_id: str, state: str, action: str, resolver: str, note: str, at: int) -> bool:
        status = await self._pool.execute(
            "UPDATE reports SET state = $1, action = $2, resolver = $3, resolution = $4, resolved_at = $5"
            " WHERE report_id = $6 AND state = $7",
            state,
            action,
            resolver,
            note,
            at,
            report_id,
            OPEN,
        )
        return not status.endswith(" 0")

    # ---------------------------------------------------------------- invite links, join requests, limits

    async def put_invite(self, invite: Invite) -> None:
        i = invite
        await self._pool.execute(
            f"INSERT INTO group_invites ({INVITE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
            i.code, i.conv, i.creator, i.created_at, i.expires_at, i.max_uses, i.uses, i.approval, i.revoked,
        )  # fmt: skip

    async def get_invite(self, code: str) -> Invite | None:
        row = await self._pool.fetchrow(f"SELECT {INVITE_COLS} FROM group_invites WHERE code = $1", code)
        return Invite(*row) if row else None

    async def invites_of(self, conv: str) -> list[Invite]:
        rows = await self._pool.fetch(
            f"SELECT {INVITE_COLS} FROM group_invites WHERE conv = $1 AND NOT revoked ORDER BY created_at DESC, code",
            conv,
        )
        return [Invite(*row) for row in rows]

    async def revoke_invite(self, conv: str, code: str) -> bool:
        status = await self._pool.execute(
            "UPDATE group_invites SET revoked = TRUE WHERE conv = $1 AND code = $2 AND NOT revoked", conv, code
        )
        return not status.endswith(" 0")

    async def use_invite(self, code: str, now: int) -> Invite | None:
        row = await self._pool.fetchrow(
            f"UPDATE group_invites SET uses = uses + 1 WHERE code = $1 AND NOT revoked"
            " AND (expires_at = 0 OR expires_at > $2) AND (max_uses = 0 OR uses < max_uses)"
            f" RETURNING {INVITE_COLS}",
            code,
            now,
        )
        return Invite(*row) if row else None

    async def unuse_invite(self, code: str) -> None:
        await self._pool.execute("UPDATE group_invites SET uses = uses - 1 WHERE code = $1 AND uses > 0", code)

    async def add_join_request(self, request: JoinRequest) -> JoinRequest:
        r = request
        row = await self._pool.fetchrow(
            f"INSERT INTO join_requests ({REQUEST_COLS}) VALUES ($1,$2,$3,$4,$5,$6,0,'') ON CONFLICT (conv, uid)"
            " DO UPDATE SET code = excluded.code, note = excluded.note, state = excluded.state,"
            " created_at = excluded.created_at, decided_at = 0, decider = ''"
            f" WHERE join_requests.state <> $5 RETURNING {REQUEST_COLS}",
            r.conv,
            r.uid,
            r.code,
            r.note,
            PENDING,
            r.created_at,
        )
        if row is None:  # a pending one exists
            row = await self._pool.fetchrow(
                f"SELECT {REQUEST_COLS} FROM join_requests WHERE conv = $1 AND uid = $2", r.conv, r.uid
            )
        return JoinRequest(*row)

    async def join_requests(self, conv: str, state: str = PENDING) -> list[JoinRequest]:
        rows = await self._pool.fetch(
            f"SELECT {REQUEST_COLS} FROM join_requests WHERE conv = $1 AND state = $2 ORDER BY created_at, uid",
            conv,
            state,
        )
        return [JoinRequest(*row) for row in rows]

    async def decide_join_request(self, conv: str, uid: str, state: str, decider: str, at: int) -> JoinRequest | None:
        row = await self._pool.fetchrow(
            f"UPDATE join_requests SET state = $1, decider = $2, decided_at = $3 WHERE conv = $4 AND uid = $5"
            f" AND state = $6 RETURNING {REQUEST_COLS}",
            state,
            decider,
            at,
            conv,
            uid,
            PENDING,
        )
        return JoinRequest(*row) if row else None

    async def group_limit(self, conv: str) -> int:
        value = await self._pool.fetchval("SELECT max_members FROM group_limits WHERE conv = $1", conv)
        return int(value or 0)

    async def set_group_limit(self, conv: str, max_members: int) -> None:
        if max_members:
            await self._pool.execute(
                "INSERT INTO group_limits (conv, max_members) VALUES ($1, $2) ON CONFLICT (conv)"
                " DO UPDATE SET max_members = excluded.max_members",
                conv,
                max_members,
            )
        else:
            await self._pool.execute("DELETE FROM group_limits WHERE conv = $1", conv)

    # ---------------------------------------------------------------- anti-spam

    async def domain_rules(self) -> dict[str, str]:
        return {row[0]: row[1] for row in await self._pool.fetch("SELECT domain, policy FROM spam_domains")}

    async def set_domain_rule(self, domain: str, policy: str | None) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            if policy is None:
                status = await conn.execute("DELETE FROM spam_domains WHERE domain = $1", domain)
            else:
                status = await conn.execute(
                    "INSERT INTO spam_domains (domain, policy) VALUES ($1, $2) ON CONFLICT (domain)"
                    " DO UPDATE SET policy = excluded.policy",
                    domain,
                    policy,
                )
            if status.endswith(" 0"):
                return False
            await conn.execute(_BUMP)
            return True

    async def record_decision(self, decision: SpamDecision) -> None:
        d = decision
        await self._pool.execute(
            "INSERT INTO spam_decisions (uid, rule, action, reason, conv, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            d.uid,
            d.rule,
            d.action,
            d.reason,
            d.conv,
            d.created_at,
        )

    async def decisions(self, *, uid: str = "", before: int = 0, limit: int = 100) -> list[SpamDecision]:
        where, params = ["decision_id < $1"], list[Any]([before or 2**62])
        if uid:
            params.append(uid)
            where.append(f"uid = ${len(params)}")
        params.append(limit)
        rows = await self._pool.fetch(
            "SELECT uid, rule, action, reason, conv, created_at, decision_id FROM spam_decisions"
            f" WHERE {' AND '.join(where)} ORDER BY decision_id DESC LIMIT ${len(params)}",
            *params,
        )
        return [SpamDecision(*row) for row in rows]

    async def count_decisions(self, uid: str, since: int, action: str) -> int:
        value = await self._pool.fetchval(
            "SELECT count(*) FROM spam_decisions WHERE uid = $1 AND created_at >= $2 AND action = $3",
            uid,
            since,
            action,
        )
        return int(value)

    async def user_mutes(self, now: int) -> dict[str, int]:
        rows = await self._pool.fetch("SELECT uid, until FROM spam_mutes WHERE until > $1", now)
        return {row[0]: row[1] for row in rows}

    async def set_user_mute(self, uid: str, until: int) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if until:
                await conn.execute(
                    "INSERT INTO spam_mutes (uid, until) VALUES ($1, $2)"
                    " ON CONFLICT (uid) DO UPDATE SET until = excluded.until",
                    uid,
                    until,
                )
            else:
                await conn.execute("DELETE FROM spam_mutes WHERE uid = $1", uid)
            await conn.execute(_BUMP)
