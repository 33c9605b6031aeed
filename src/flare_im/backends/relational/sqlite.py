"""Relational port on SQLite (embedded): users, groups, memberships, conversation state, push targets and
content-filter rules."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from flare_im.backends.migrations import Migration, Schema
from flare_im.backends.relational.base import (
    AlreadyExists,
    FilterRule,
    Group,
    Member,
    PushTarget,
    SettingsChange,
    User,
)
from flare_im.backends.relational.sqlite_accounts import ACCOUNT_STEPS, SqliteAccounts, flag_identities
from flare_im.backends.relational.sqlite_notify import NOTIFY_STEPS, SqliteNotifications
from flare_im.backends.sqlite_db import RowBatcher, SqliteDatabase, columns

_MEMBER_SETTINGS = (
    ("pinned", "INTEGER NOT NULL DEFAULT 0"),
    ("muted", "INTEGER NOT NULL DEFAULT 0"),
    ("hidden", "INTEGER NOT NULL DEFAULT 0"),
    ("draft", "TEXT NOT NULL DEFAULT ''"),
    ("cleared_seq", "INTEGER NOT NULL DEFAULT 0"),
)


def _add_member_settings(conn: sqlite3.Connection) -> None:
    # Before versioning these columns were added one statement at a time: add only the missing ones.
    present = {row[1] for row in conn.execute("PRAGMA table_info(members)")}
    for name, definition in _MEMBER_SETTINGS:
        if name not in present:
            conn.execute(f"ALTER TABLE members ADD COLUMN {name} {definition}")


MIGRATIONS = (
    Migration(
        1,
        "users, refresh tokens, groups, members",
        (
            """CREATE TABLE IF NOT EXISTS users (
            uid TEXT PRIMARY KEY, username TEXT UNIQUE, password_hash TEXT, display_name TEXT NOT NULL,
            avatar TEXT NOT NULL, created_at INTEGER NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS refresh_tokens (
            token_hash TEXT PRIMARY KEY, uid TEXT NOT NULL, expires_at INTEGER NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS groups (
            gid TEXT PRIMARY KEY, name TEXT NOT NULL, avatar TEXT NOT NULL, owner TEXT NOT NULL,
            created_at INTEGER NOT NULL)""",
            """CREATE TABLE IF NOT EXISTS members (
            uid TEXT NOT NULL, conv TEXT NOT NULL, role TEXT NOT NULL, join_seq INTEGER NOT NULL,
            read_seq INTEGER NOT NULL, delivered_seq INTEGER NOT NULL, version INTEGER NOT NULL,
            left_conv INTEGER NOT NULL DEFAULT 0, joined_order INTEGER NOT NULL,
            PRIMARY KEY (uid, conv)) WITHOUT ROWID""",
            "CREATE INDEX IF NOT EXISTS members_conv ON members (conv, left_conv, joined_order)",
        ),
    ),
    Migration(2, "member settings: pinned, muted, hidden, draft, cleared seq", (_add_member_settings,)),
    Migration(
        3,
        "mentions",
        (
            """CREATE TABLE mentions (
            uid TEXT NOT NULL, conv TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,
            PRIMARY KEY (uid, conv, seq)) WITHOUT ROWID""",
        ),
    ),
    Migration(
        4,
        "hidden messages (delete for me)",
        (
            """CREATE TABLE hidden_messages (
            uid TEXT NOT NULL, conv TEXT NOT NULL, seq INTEGER NOT NULL, version INTEGER NOT NULL,
            PRIMARY KEY (uid, conv, seq)) WITHOUT ROWID""",
        ),
    ),
    Migration(
        5,
        "push targets, content-filter rules",
        (
            """CREATE TABLE push_targets (
            uid TEXT NOT NULL, device TEXT NOT NULL, provider TEXT NOT NULL, token TEXT NOT NULL,
            app_id TEXT NOT NULL, keys TEXT NOT NULL, locale TEXT NOT NULL, updated_at INTEGER NOT NULL,
            PRIMARY KEY (uid, device)) WITHOUT ROWID""",
            "CREATE UNIQUE INDEX push_targets_token ON push_targets (provider, token)",
            """CREATE TABLE filter_rules (
            rule_id TEXT PRIMARY KEY, pattern TEXT NOT NULL, match_kind TEXT NOT NULL, action TEXT NOT NULL,
            enabled INTEGER NOT NULL, note TEXT NOT NULL, created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL) WITHOUT ROWID""",
            "CREATE TABLE filter_rules_revision (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL)",
            "INSERT INTO filter_rules_revision VALUES (1, 0)",
        ),
    ),
    Migration(
        6,
        "refresh-token families, revoked sessions, invites; identity flags (ids colliding once normalised)",
        (*ACCOUNT_STEPS, flag_identities),
    ),
    Migration(7, "notification settings, push jobs", NOTIFY_STEPS),
)


def _detect_unversioned(conn: sqlite3.Connection) -> int:
    """Which migration a database made before versioning had reached, from the tables and columns it has."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"users", "refresh_tokens", "groups", "members"} <= tables:
        return 0  # migrations 1 and 2 create and add only what is missing
    columns_present = {row[1] for row in conn.execute("PRAGMA table_info(members)")}
    if not all(name in columns_present for name, _ in _MEMBER_SETTINGS):
        return 1
    if "mentions" not in tables:
        return 2
    return 4 if "hidden_messages" in tables else 3


SCHEMA = Schema("relational", MIGRATIONS, detect=_detect_unversioned)

_USER_COLS = "uid, username, display_name, avatar, created_at"
_PUSH_COLS = "uid, device, provider, token, app_id, keys, locale, updated_at"
_RULE_COLS = "rule_id, pattern, match_kind, action, enabled, note, created_at, updated_at"
_BUMP_RULES = "UPDATE filter_rules_revision SET revision = revision + 1"
T = TypeVar("T")
_MEMBER_COLS = (
    "conv, uid, role, join_seq, read_seq, delivered_seq, version, left_conv, pinned, muted, hidden, draft, cleared_seq"
)


def _user(row: Any) -> User:
    return User(uid=row[0], username=row[1], display_name=row[2], avatar=row[3], created_at=row[4])


def _member(row: Any) -> Member:
    return Member(
        conv=row[0],
        uid=row[1],
        role=row[2],
        join_seq=row[3],
        read_seq=row[4],
        delivered_seq=row[5],
        version=row[6],
        left=bool(row[7]),
        pinned=bool(row[8]),
        muted=bool(row[9]),
        hidden=bool(row[10]),
        draft=row[11],
        cleared_seq=row[12],
    )


def _mention_rows(rows: list[tuple[Any, ...]]) -> list[tuple[str, str, int, str]]:
    """(mentioned, conv, seq, sender) for every mention of a batch of ``mark_sent`` rows."""
    return [(who, row[3], row[0], row[2]) for row in rows for who in row[4]]


def _rule(row: Any) -> FilterRule:
    return FilterRule(
        rule_id=row[0],
        pattern=row[1],
        match=row[2],
        action=row[3],
        enabled=bool(row[4]),
        note=row[5],
        created_at=row[6],
        updated_at=row[7],
    )


def _atomic(conn: sqlite3.Connection, name: str, op: Callable[[], T]) -> T:
    """Run ``op``'s statements all or none: a write shares its transaction with others (group commit), so a
    failing multi-statement write rolls back to its own savepoint."""
    conn.execute(f"SAVEPOINT {name}")
    try:
        result = op()
    except BaseException:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
        raise
    conn.execute(f"RELEASE {name}")
    return result


def _insert_members(conn: sqlite3.Connection, members: Sequence[Member]) -> None:
    order = conn.execute("SELECT coalesce(max(joined_order), 0) FROM members").fetchone()[0]
    rows = [
        (m.uid, m.conv, m.role, m.join_seq, m.read_seq, m.delivered_seq, m.version, order + i + 1)
        for i, m in enumerate(members)
    ]
    conn.executemany(
        "INSERT INTO members (uid, conv, role, join_seq, read_seq, delivered_seq, version, left_conv,"
        " joined_order) VALUES (?,?,?,?,?,?,?,0,?) ON CONFLICT (uid, conv) DO UPDATE SET role = excluded.role,"
        " join_seq = excluded.join_seq, read_seq = max(read_seq, excluded.read_seq),"
        " version = excluded.version, left_conv = 0, joined_order = excluded.joined_order",
        rows,
    )


class SqliteRelational(SqliteAccounts, SqliteNotifications):
    """Implements every relational port (RelationalStore) over one SqliteDatabase."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.apply_migrations(SCHEMA)  # the embedded database upgrades itself on open
        self._sent = RowBatcher(
            db,
            [
                (
                    "UPDATE members SET read_seq = ?, version = ? WHERE uid = ? AND conv = ? AND read_seq < ?",
                    columns(0, 1, 2, 3, 0),
                ),
                ("INSERT OR IGNORE INTO mentions (uid, conv, seq, sender) VALUES (?,?,?,?)", _mention_rows),
            ],
        )

    # ---------------------------------------------------------------- users

    async def get_user(self, uid: str) -> User | None:
        row = self._db.fetchone(f"SELECT {_USER_COLS} FROM users WHERE uid = ?", (uid,))
        return _user(row) if row else None

    async def get_users(self, uids: Sequence[str]) -> list[User]:
        return [_user(r) for r in self._db.fetchall_in(f"SELECT {_USER_COLS} FROM users WHERE uid IN (?*)", uids)]

    async def get_credentials(self, username: str) -> tuple[str, str] | None:
        row = self._db.fetchone(
            "SELECT uid, password_hash FROM users WHERE username = ? AND password_hash IS NOT NULL", (username,)
        )
        return (row[0], row[1]) if row else None

    async def update_profile(self, uid: str, *, display_name: str | None, avatar: str | None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE users SET display_name = coalesce(?, display_name), avatar = coalesce(?, avatar) WHERE uid = ?",
                (display_name, avatar, uid),
            )

        await self._db.write(op)

    # ---------------------------------------------------------------- groups

    async def create_group(self, group: Group, members: Sequence[Member]) -> None:
        row = (group.gid, group.name, group.avatar, group.owner, group.created_at)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO groups (gid, name, avatar, owner, created_at) VALUES (?,?,?,?,?)", row)
            _insert_members(conn, members)

        def op(conn: sqlite3.Connection) -> None:
            try:
                _atomic(conn, "create_group", lambda: insert(conn))
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc):
                    raise
                raise AlreadyExists(str(exc)) from None

        await self._db.write(op)

    async def get_group(self, gid: str) -> Group | None:
        row = self._db.fetchone("SELECT gid, name, avatar, owner, created_at FROM groups WHERE gid = ?", (gid,))
        return Group(gid=row[0], name=row[1], avatar=row[2], owner=row[3], created_at=row[4]) if row else None

    async def get_groups(self, gids: Sequence[str]) -> list[Group]:
        rows = self._db.fetchall_in("SELECT gid, name, avatar, owner, created_at FROM groups WHERE gid IN (?*)", gids)
        return [Group(gid=r[0], name=r[1], avatar=r[2], owner=r[3], created_at=r[4]) for r in rows]

    async def update_group(self, gid: str, *, name: str | None, avatar: str | None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE groups SET name = coalesce(?, name), avatar = coalesce(?, avatar) WHERE gid = ?",
                (name, avatar, gid),
            )

        await self._db.write(op)

    # ---------------------------------------------------------------- memberships

    async def add_members(self, members: Sequence[Member]) -> None:
        members = list(members)
        await self._db.write(lambda conn: _insert_members(conn, members))

    async def set_left(self, conv: str, uid: str, version: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE members SET left_conv = 1, version = ? WHERE uid = ? AND conv = ?", (version, uid, conv)
            )

        await self._db.write(op)

    async def set_role(self, conv: str, uid: str, role: str, version: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE members SET role = ?, version = ? WHERE uid = ? AND conv = ?", (role, version, uid, conv)
            )

        await self._db.write(op)

    async def get_member(self, conv: str, uid: str) -> Member | None:
        row = self._db.fetchone(f"SELECT {_MEMBER_COLS} FROM members WHERE uid = ? AND conv = ?", (uid, conv))
        return _member(row) if row else None

    async def list_members(self, conv: str) -> list[Member]:
        rows = self._db.fetchall(
            f"SELECT {_MEMBER_COLS} FROM members WHERE conv = ? AND left_conv = 0 ORDER BY joined_order", (conv,)
        )
        return [_member(r) for r in rows]

    async def count_members(self, convs: Sequence[str]) -> dict[str, int]:
        rows = self._db.fetchall_in(
            "SELECT conv, count(*) FROM members WHERE conv IN (?*) AND left_conv = 0 GROUP BY conv", convs
        )
        return dict(rows)

    async def list_user_convs(self, uid: str) -> list[Member]:
        return [_member(r) for r in self._db.fetchall(f"SELECT {_MEMBER_COLS} FROM members WHERE uid = ?", (uid,))]

    async def list_users_convs(self, uids: Sequence[str]) -> dict[str, list[Member]]:
        out: dict[str, list[Member]] = {uid: [] for uid in uids}
        for row in self._db.fetchall_in(f"SELECT {_MEMBER_COLS} FROM members WHERE uid IN (?*)", list(out)):
            out[row[1]].append(_member(row))
        return out

    async def advance_read(self, conv: str, uid: str, seq: int, version: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE members SET read_seq = ?, version = ? WHERE uid = ? AND conv = ? AND read_seq < ?",
                (seq, version, uid, conv, seq),
            )
            return cur.rowcount > 0

        moved: bool = await self._db.write(op)
        return moved

    def mark_sent(self, conv: str, uid: str, seq: int, version: int, mentions: Sequence[str] = ()) -> Awaitable[None]:
        return self._sent.submit((seq, version, uid, conv, tuple(mentions)))

    async def unread_mentions(self, uid: str) -> dict[str, int]:
        rows = self._db.fetchall(
            "SELECT mn.conv, count(*) FROM mentions mn JOIN members m ON m.conv = mn.conv AND m.uid = ?1"
            " WHERE mn.uid IN (?1, '*') AND mn.sender != ?1 AND m.left_conv = 0"
            " AND mn.seq > max(m.read_seq, m.cleared_seq, m.join_seq) GROUP BY mn.conv",
            (uid,),
        )
        return {conv: count for conv, count in rows}

    async def update_settings(self, conv: str, uid: str, change: SettingsChange, version: int) -> Member | None:
        c = change
        flags = [None if v is None else int(v) for v in (c.pinned, c.muted, c.hidden)]
        params = (*flags, c.draft, c.cleared_seq, c.cleared_seq, version, uid, conv)

        def op(conn: sqlite3.Connection) -> Member | None:
            row = conn.execute(
                "UPDATE members SET pinned = coalesce(?, pinned), muted = coalesce(?, muted),"
                " hidden = coalesce(?, hidden), draft = coalesce(?, draft),"
                " cleared_seq = max(cleared_seq, coalesce(?, 0)), read_seq = max(read_seq, coalesce(?, 0)),"
                f" version = ? WHERE uid = ? AND conv = ? RETURNING {_MEMBER_COLS}",
                params,
            ).fetchone()
            return _member(row) if row else None

        result: Member | None = await self._db.write(op)
        return result

    async def hide_messages(self, conv: str, uid: str, seqs: Sequence[int], version: int) -> None:
        rows = [(uid, conv, seq, version) for seq in seqs]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR IGNORE INTO hidden_messages (uid, conv, seq, version) VALUES (?,?,?,?)", rows)
            conn.execute("UPDATE members SET version = ? WHERE uid = ? AND conv = ?", (version, uid, conv))

        await self._db.write(lambda conn: _atomic(conn, "hide_messages", lambda: op(conn)))

    async def hidden_messages(self, conv: str, uid: str, *, since: int = 0) -> list[int]:
        rows = self._db.fetchall(
            "SELECT seq FROM hidden_messages WHERE uid = ? AND conv = ? AND version > ? ORDER BY seq",
            (uid, conv, since),
        )
        return [row[0] for row in rows]

    async def hidden_in(self, uid: str, convs: Sequence[str]) -> dict[str, dict[int, int]]:
        rows = self._db.fetchall_in(
            "SELECT conv, seq, version FROM hidden_messages WHERE uid = ? AND conv IN (?*)", convs, (uid,)
        )
        out: dict[str, dict[int, int]] = {}
        for conv, seq, version in rows:
            out.setdefault(conv, {})[seq] = version
        return out

    async def advance_delivered(self, conv: str, uid: str, seq: int) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE members SET delivered_seq = ? WHERE uid = ? AND conv = ? AND delivered_seq < ?",
                (seq, uid, conv, seq),
            )
            return cur.rowcount > 0

        moved: bool = await self._db.write(op)
        return moved

    async def max_version(self) -> int:
        return int(self._db.fetchone("SELECT coalesce(max(version), 0) FROM members")[0])

    # ---------------------------------------------------------------- push targets

    async def put_push_target(self, target: PushTarget) -> None:
        t = target
        row = (t.uid, t.device, t.provider, t.token, t.app_id, t.keys, t.locale, t.updated_at)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM push_targets WHERE provider = ? AND token = ? AND NOT (uid = ? AND device = ?)",
                (t.provider, t.token, t.uid, t.device),
            )
            conn.execute(
                f"INSERT INTO push_targets ({_PUSH_COLS}) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (uid, device) DO UPDATE"
                " SET provider = excluded.provider, token = excluded.token, app_id = excluded.app_id,"
                " keys = excluded.keys, locale = excluded.locale, updated_at = excluded.updated_at",
                row,
            )

        await self._db.write(lambda conn: _atomic(conn, "put_push_target", lambda: op(conn)))

    async def delete_push_target(self, uid: str, device: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM push_targets WHERE uid = ? AND device = ?", (uid, device)).rowcount > 0

        deleted: bool = await self._db.write(op)
        return deleted

    async def push_targets(self, uids: Sequence[str]) -> list[PushTarget]:
        rows = self._db.fetchall_in(f"SELECT {_PUSH_COLS} FROM push_targets WHERE uid IN (?*)", uids)
        return sorted((PushTarget(*row) for row in rows), key=lambda t: (t.uid, t.device))

    # ---------------------------------------------------------------- content-filter rules

    async def put_filter_rule(self, rule: FilterRule) -> None:
        r = rule
        row = (r.rule_id, r.pattern, r.match, r.action, int(r.enabled), r.note, r.created_at, r.updated_at)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO filter_rules ({_RULE_COLS}) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (rule_id) DO UPDATE"
                " SET pattern = excluded.pattern, match_kind = excluded.match_kind, action = excluded.action,"
                " enabled = excluded.enabled, note = excluded.note, updated_at = excluded.updated_at",
                row,
            )
            conn.execute(_BUMP_RULES)

        await self._db.write(lambda conn: _atomic(conn, "put_filter_rule", lambda: op(conn)))

    async def delete_filter_rule(self, rule_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            if conn.execute("DELETE FROM filter_rules WHERE rule_id = ?", (rule_id,)).rowcount == 0:
                return False
            conn.execute(_BUMP_RULES)
            return True

        deleted: bool = await self._db.write(lambda conn: _atomic(conn, "delete_filter_rule", lambda: op(conn)))
        return deleted

    async def filter_rules(self) -> list[FilterRule]:
        return [_rule(row) for row in self._db.fetchall(f"SELECT {_RULE_COLS} FROM filter_rules ORDER BY rule_id")]

    async def filter_rules_revision(self) -> int:
        return int(self._db.fetchone("SELECT revision FROM filter_rules_revision")[0])
