"""The safety port on SQLite (embedded), in the relational database's file; its own migration component."""

from __future__ import annotations

import sqlite3
from typing import Any

from flare_im.backends.migrations import Migration, Schema
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
from flare_im.backends.sqlite_db import SqliteDatabase

_BUMP = "UPDATE safety_revision SET revision = revision + 1"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "blocks between users",
        (
            "CREATE TABLE safety_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL)",
            "INSERT INTO safety_revision VALUES (1, 0)",
            """CREATE TABLE blocks (
            uid TEXT NOT NULL, target TEXT NOT NULL, created_at INTEGER NOT NULL,
            PRIMARY KEY (uid, target)) WITHOUT ROWID""",
            "CREATE TABLE block_lists (uid TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
        ),
    ),
    Migration(
        2,
        "group mutes",
        (
            """CREATE TABLE group_mutes (
            conv TEXT NOT NULL, uid TEXT NOT NULL, until INTEGER NOT NULL, actor TEXT NOT NULL,
            created_at INTEGER NOT NULL, PRIMARY KEY (conv, uid)) WITHOUT ROWID""",
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
            seq INTEGER NOT NULL, reason TEXT NOT NULL, note TEXT NOT NULL, state TEXT NOT NULL,
            created_at INTEGER NOT NULL, resolved_at INTEGER NOT NULL, resolver TEXT NOT NULL, action TEXT NOT NULL,
            resolution TEXT NOT NULL, snapshot TEXT NOT NULL) WITHOUT ROWID""",
            "CREATE INDEX reports_state ON reports (state, created_at)",
            "CREATE INDEX reports_reporter ON reports (reporter, created_at)",
        ),
    ),
    Migration(
        4,
        "invite links, join requests, group member limits",
        (
            """CREATE TABLE group_invites (
            code TEXT PRIMARY KEY, conv TEXT NOT NULL, creator TEXT NOT NULL, created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL, max_uses INTEGER NOT NULL, uses INTEGER NOT NULL, approval INTEGER NOT NULL,
            revoked INTEGER NOT NULL) WITHOUT ROWID""",
            "CREATE INDEX group_invites_conv ON group_invites (conv, created_at)",
            """CREATE TABLE join_requests (
            conv TEXT NOT NULL, uid TEXT NOT NULL, code TEXT NOT NULL, note TEXT NOT NULL, state TEXT NOT NULL,
            created_at INTEGER NOT NULL, decided_at INTEGER NOT NULL, decider TEXT NOT NULL,
            PRIMARY KEY (conv, uid)) WITHOUT ROWID""",
            "CREATE TABLE group_limits (conv TEXT PRIMARY KEY, max_members INTEGER NOT NULL) WITHOUT ROWID",
        ),
    ),
    Migration(
        5,
        "anti-spam: link rules, decisions, automatic mutes",
        (
            "CREATE TABLE spam_domains (domain TEXT PRIMARY KEY, policy TEXT NOT NULL) WITHOUT ROWID",
            """CREATE TABLE spam_decisions (
            decision_id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL, rule TEXT NOT NULL, action TEXT NOT NULL,
            reason TEXT NOT NULL, conv TEXT NOT NULL, created_at INTEGER NOT NULL)""",
            "CREATE INDEX spam_decisions_user ON spam_decisions (uid, created_at)",
            "CREATE TABLE spam_mutes (uid TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID",
        ),
    ),
)

SCHEMA = Schema("safety", MIGRATIONS)
INVITE_COLS = "code, conv, creator, created_at, expires_at, max_uses, uses, approval, revoked"
REQUEST_COLS = "conv, uid, code, note, state, created_at, decided_at, decider"


def _invite(row: Any) -> Invite:
    return Invite(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), bool(row[8]))


class SqliteSafety:
    """Every safety store over one SqliteDatabase (its schema is migrated on construction, before start())."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.apply_migrations(SCHEMA)

    async def revision(self) -> int:
        row = self._db.fetchone("SELECT revision FROM safety_revision WHERE id = 1")
        return int(row[0]) if row else 0

    # ---------------------------------------------------------------- blocks

    async def all_blocks(self) -> list[Block]:
        rows = self._db.fetchall("SELECT uid, target, created_at FROM blocks")
        return [Block(*row) for row in rows]

    async def blocks_of(self, uid: str) -> tuple[list[Block], int]:
        rows = self._db.fetchall(
            "SELECT uid, target, created_at FROM blocks WHERE uid = ? ORDER BY created_at, target", (uid,)
        )
        version = self._db.fetchone("SELECT version FROM block_lists WHERE uid = ?", (uid,))
        return [Block(*row) for row in rows], int(version[0]) if version else 0

    async def set_block(self, uid: str, target: str, blocked: bool, at: int) -> int:
        def op(conn: sqlite3.Connection) -> int:
            if blocked:
                changed = conn.execute(
                    "INSERT OR IGNORE INTO blocks (uid, target, created_at) VALUES (?, ?, ?)", (uid, target, at)
                ).rowcount
            else:
                changed = conn.execute("DELETE FROM blocks WHERE uid = ? AND target = ?", (uid, target)).rowcount
            if not changed:
                return 0
            conn.execute(_BUMP)
            row = conn.execute(
                "INSERT INTO block_lists (uid, version) VALUES (?, ?) ON CONFLICT (uid) DO UPDATE SET"
                " version = max(excluded.version, block_lists.version + 1) RETURNING version",
                (uid, at),
            ).fetchone()
            return int(row[0])

        version: int = await self._db.write(op)
        return version

    # ---------------------------------------------------------------- mutes

    async def all_mutes(self, now: int) -> list[GroupMute]:
        rows = self._db.fetchall("SELECT conv, uid, until, actor, created_at FROM group_mutes WHERE until > ?", (now,))
        return [GroupMute(*row) for row in rows]

    async def mutes_of(self, conv: str, now: int) -> list[GroupMute]:
        rows = self._db.fetchall(
            "SELECT conv, uid, until, actor, created_at FROM group_mutes WHERE conv = ? AND until > ? ORDER BY uid",
            (conv, now),
        )
        return [GroupMute(*row) for row in rows]

    async def set_mute(self, mute: GroupMute) -> None:
        m = mute

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO group_mutes (conv, uid, until, actor, created_at) VALUES (?, ?, ?, ?, ?)",
                (m.conv, m.uid, m.until, m.actor, m.created_at),
            )
            conn.execute(_BUMP)

        await self._db.write(op)

    async def remove_mute(self, conv: str, uid: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            gone = conn.execute("DELETE FROM group_mutes WHERE conv = ? AND uid = ?", (conv, uid)).rowcount > 0
            if gone:
                conn.execute(_BUMP)
            return gone

        removed: bool = await self._db.write(op)
        return removed

    # ---------------------------------------------------------------- reports

    async def add_report(self, report: Report) -> Report:
        r = report

        def op(conn: sqlite3.Connection) -> Report:
            found = conn.execute(
                f"SELECT {REPORT_COLS} FROM reports WHERE reporter = ? AND target = ? AND conv = ? AND seq = ?"
                " AND state = ?",
                (r.reporter, r.target, r.conv, r.seq, OPEN),
            ).fetchone()
            if found is not None:
                return Report(*found)
            conn.execute(
                f"INSERT INTO reports ({REPORT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (r.report_id, r.reporter, r.target, r.conv, r.seq, r.reason, r.note, r.state, r.created_at,
                 r.resolved_at, r.resolver, r.action, r.resolution, r.snapshot),
            )  # fmt: skip
            return r

        stored: Report = await self._db.write(op)
        return stored

    async def get_report(self, report_id: str) -> Report | None:
        row = self._db.fetchone(f"SELECT {REPORT_COLS} FROM reports WHERE report_id = ?", (report_id,))
        return Report(*row) if row else None

    async def reports(self, *, state: str = "", reporter: str = "", before: int = 0, limit: int = 100) -> list[Report]:
        where, params = ["created_at < ?"], list[Any]([before or 2**62])
        if state:
            where.append("state = ?")
            params.append(state)
        if reporter:
            where.append("reporter = ?")
            params.append(reporter)
        rows = self._db.fetchall(
            f"SELECT {REPORT_COLS} FROM reports WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, report_id LIMIT ?",
            (*params, limit),
        )
        return [Report(*row) for row in rows]

    async def resolve_report(self, report_id: str, state: str, action: str, resolver: str, note: str, at: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute(
                    "UPDATE reports SET state = ?, action = ?, resolver = ?, resolution = ?, resolved_at = ?"
                    " WHERE report_id = ? AND state = ?",
                    (state, action, resolver, note, at, report_id, OPEN),
                ).rowcount
                > 0
            )

        done: bool = await self._db.write(op)
        return done

    # ---------------------------------------------------------------- invite links, join requests, limits

    async def put_invite(self, invite: Invite) -> None:
        i = invite

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO group_invites ({INVITE_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
                (i.code, i.conv, i.creator, i.created_at, i.expires_at, i.max_uses, i.uses, i.approval, i.revoked),
            )

        await self._db.write(op)

    async def get_invite(self, code: str) -> Invite | None:
        row = self._db.fetchone(f"SELECT {INVITE_COLS} FROM group_invites WHERE code = ?", (code,))
        return _invite(row) if row else None

    async def invites_of(self, conv: str) -> list[Invite]:
        rows = self._db.fetchall(
            f"SELECT {INVITE_COLS} FROM group_invites WHERE conv = ? AND revoked = 0 ORDER BY created_at DESC, code",
            (conv,),
        )
        return [_invite(row) for row in rows]

    async def revoke_invite(self, conv: str, code: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            sql = "UPDATE group_invites SET revoked = 1 WHERE conv = ? AND code = ? AND revoked = 0"
            return conn.execute(sql, (conv, code)).rowcount > 0

        done: bool = await self._db.write(op)
        return done

    async def use_invite(self, code: str, now: int) -> Invite | None:
        def op(conn: sqlite3.Connection) -> Invite | None:
            row = conn.execute(
                f"UPDATE group_invites SET uses = uses + 1 WHERE code = ? AND revoked = 0"
                " AND (expires_at = 0 OR expires_at > ?) AND (max_uses = 0 OR uses < max_uses)"
                f" RETURNING {INVITE_COLS}",
                (code, now),
            ).fetchone()
            return _invite(row) if row else None

        used: Invite | None = await self._db.write(op)
        return used

    async def unuse_invite(self, code: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE group_invites SET uses = uses - 1 WHERE code = ? AND uses > 0", (code,))

        await self._db.write(op)

    async def add_join_request(self, request: JoinRequest) -> JoinRequest:
        r = request

        def op(conn: sqlite3.Connection) -> JoinRequest:
            row = conn.execute(
                f"SELECT {REQUEST_COLS} FROM join_requests WHERE conv = ? AND uid = ? AND state = ?",
                (r.conv, r.uid, PENDING),
            ).fetchone()
            if row is not None:
                return JoinRequest(*row)
            conn.execute(
                f"INSERT OR REPLACE INTO join_requests ({REQUEST_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                (r.conv, r.uid, r.code, r.note, PENDING, r.created_at, 0, ""),
            )
            return JoinRequest(r.conv, r.uid, r.code, r.note, PENDING, r.created_at)

        stored: JoinRequest = await self._db.write(op)
        return stored

    async def join_requests(self, conv: str, state: str = PENDING) -> list[JoinRequest]:
        rows = self._db.fetchall(
            f"SELECT {REQUEST_COLS} FROM join_requests WHERE conv = ? AND state = ? ORDER BY created_at, uid",
            (conv, state),
        )
        return [JoinRequest(*row) for row in rows]

    async def decide_join_request(self, conv: str, uid: str, state: str, decider: str, at: int) -> JoinRequest | None:
        def op(conn: sqlite3.Connection) -> JoinRequest | None:
            row = conn.execute(
                f"UPDATE join_requests SET state = ?, decider = ?, decided_at = ? WHERE conv = ? AND uid = ?"
                f" AND state = ? RETURNING {REQUEST_COLS}",
                (state, decider, at, conv, uid, PENDING),
            ).fetchone()
            return JoinRequest(*row) if row else None

        decided: JoinRequest | None = await self._db.write(op)
        return decided

    async def group_limit(self, conv: str) -> int:
        row = self._db.fetchone("SELECT max_members FROM group_limits WHERE conv = ?", (conv,))
        return int(row[0]) if row else 0

    async def set_group_limit(self, conv: str, max_members: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if max_members:
                sql = "INSERT OR REPLACE INTO group_limits (conv, max_members) VALUES (?, ?)"
                conn.execute(sql, (conv, max_members))
            else:
                conn.execute("DELETE FROM group_limits WHERE conv = ?", (conv,))

        await self._db.write(op)

    # ---------------------------------------------------------------- anti-spam

    async def domain_rules(self) -> dict[str, str]:
        return {row[0]: row[1] for row in self._db.fetchall("SELECT domain, policy FROM spam_domains")}

    async def set_domain_rule(self, domain: str, policy: str | None) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if policy is None:
                changed = conn.execute("DELETE FROM spam_domains WHERE domain = ?", (domain,)).rowcount > 0
            else:
                sql = "INSERT OR REPLACE INTO spam_domains (domain, policy) VALUES (?, ?)"
                changed = conn.execute(sql, (domain, policy)).rowcount > 0
            if changed:
                conn.execute(_BUMP)
            return changed

        done: bool = await self._db.write(op)
        return done

    async def record_decision(self, decision: SpamDecision) -> None:
        d = decision

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO spam_decisions (uid, rule, action, reason, conv, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (d.uid, d.rule, d.action, d.reason, d.conv, d.created_at),
            )

        await self._db.write(op)

    async def decisions(self, *, uid: str = "", before: int = 0, limit: int = 100) -> list[SpamDecision]:
        where, params = ["decision_id < ?"], list[Any]([before or 2**62])
        if uid:
            where.append("uid = ?")
            params.append(uid)
        rows = self._db.fetchall(
            "SELECT uid, rule, action, reason, conv, created_at, decision_id FROM spam_decisions"
            f" WHERE {' AND '.join(where)} ORDER BY decision_id DESC LIMIT ?",
            (*params, limit),
        )
        return [SpamDecision(*row) for row in rows]

    async def count_decisions(self, uid: str, since: int, action: str) -> int:
        row = self._db.fetchone(
            "SELECT count(*) FROM spam_decisions WHERE uid = ? AND created_at >= ? AND action = ?", (uid, since, action)
        )
        return int(row[0])

    async def user_mutes(self, now: int) -> dict[str, int]:
        return {
            row[0]: row[1] for row in self._db.fetchall("SELECT uid, until FROM spam_mutes WHERE until > ?", (now,))
        }

    async def set_user_mute(self, uid: str, until: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if until:
                conn.execute("INSERT OR REPLACE INTO spam_mutes (uid, until) VALUES (?, ?)", (uid, until))
            else:
                conn.execute("DELETE FROM spam_mutes WHERE uid = ?", (uid,))
            conn.execute(_BUMP)

        await self._db.write(op)
