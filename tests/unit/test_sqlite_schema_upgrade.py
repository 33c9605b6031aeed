"""The SQLite adapters (relational, message log) upgrade a database made by an earlier schema in place:
relational files made before schema versioning are detected and stamped, then the remaining migrations run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from flare_im.backends.message_log.base import Change, ConvHead, Revision
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.migrations import SchemaError, SqliteMigrator
from flare_im.backends.relational.base import Member, SettingsChange
from flare_im.backends.relational.sqlite import SCHEMA, SqliteRelational
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.ids import now_ms, snowflake_floor
from flare_im.protocol.frames import Message

# The first schema (before conversation settings), as the first release created it.
FIRST_SCHEMA = (
    """CREATE TABLE users (uid TEXT PRIMARY KEY, username TEXT UNIQUE, password_hash TEXT,
        display_name TEXT NOT NULL, avatar TEXT NOT NULL, created_at INTEGER NOT NULL)""",
    "CREATE TABLE refresh_tokens (token_hash TEXT PRIMARY KEY, uid TEXT NOT NULL, expires_at INTEGER NOT NULL)",
    """CREATE TABLE groups (gid TEXT PRIMARY KEY, name TEXT NOT NULL, avatar TEXT NOT NULL, owner TEXT NOT NULL,
        created_at INTEGER NOT NULL)""",
    """CREATE TABLE members (uid TEXT NOT NULL, conv TEXT NOT NULL, role TEXT NOT NULL,
        join_seq INTEGER NOT NULL, read_seq INTEGER NOT NULL, delivered_seq INTEGER NOT NULL,
        version INTEGER NOT NULL, left_conv INTEGER NOT NULL DEFAULT 0, joined_order INTEGER NOT NULL,
        PRIMARY KEY (uid, conv)) WITHOUT ROWID""",
    "CREATE INDEX members_conv ON members (conv, left_conv, joined_order)",
)
SETTINGS_COLUMNS = (
    "ALTER TABLE members ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE members ADD COLUMN muted INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE members ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE members ADD COLUMN draft TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE members ADD COLUMN cleared_seq INTEGER NOT NULL DEFAULT 0",
)
MENTIONS = """CREATE TABLE mentions (uid TEXT NOT NULL, conv TEXT NOT NULL, seq INTEGER NOT NULL,
    sender TEXT NOT NULL, PRIMARY KEY (uid, conv, seq)) WITHOUT ROWID"""


def make_old_database(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as old:
        for statement in statements:
            old.execute(statement)
        old.execute(
            "INSERT INTO members (uid, conv, role, join_seq, read_seq, delivered_seq, version, left_conv,"
            " joined_order) VALUES ('alice', 'g:x', 'owner', 0, 4, 0, 1, 0, 1)"
        )
    old.close()


def recorded(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT component, version FROM schema_migrations ORDER BY version").fetchall()
    conn.close()
    return rows


async def open_store(path: Path) -> tuple[SqliteDatabase, SqliteRelational]:
    db = SqliteDatabase(SqliteConfig(path=str(path)))
    store = SqliteRelational(db)
    db.start()
    return db, store


async def test_member_settings_columns_are_added_to_an_old_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # the members table alone, as the first schema made it
        old.execute(FIRST_SCHEMA[3])
        old.execute("INSERT INTO members VALUES ('alice', 'g:x', 'owner', 0, 4, 0, 1, 0, 1)")
    old.close()
    db, store = await open_store(path)
    try:
        member = await store.get_member("g:x", "alice")
        assert member is not None
        assert (member.role, member.read_seq, member.pinned, member.draft, member.cleared_seq) == (
            "owner",
            4,
            False,
            "",
            0,
        )
        updated = await store.update_settings("g:x", "alice", SettingsChange(pinned=True), 2)
        assert updated is not None
        assert updated.pinned
        assert await store.get_user("nobody") is None  # the tables it lacked were created
    finally:
        await db.close()
    assert recorded(path) == [("relational", v) for v in range(1, SCHEMA.latest + 1)]
    # Opening it again changes nothing more.
    db, _ = await open_store(path)
    await db.close()
    assert recorded(path) == [("relational", v) for v in range(1, SCHEMA.latest + 1)]


@pytest.mark.parametrize(
    ("statements", "detected"),
    [
        pytest.param(FIRST_SCHEMA, 1, id="first-schema"),
        pytest.param((*FIRST_SCHEMA, *SETTINGS_COLUMNS), 2, id="with-settings"),
        pytest.param((*FIRST_SCHEMA, *SETTINGS_COLUMNS, MENTIONS), 3, id="with-mentions"),
    ],
)
async def test_a_database_made_before_versioning_is_stamped_then_upgraded(
    tmp_path: Path, statements: tuple[str, ...], detected: int
) -> None:
    path = tmp_path / "old.db"
    make_old_database(path, *statements)
    conn = sqlite3.connect(path, isolation_level=None)
    migrator = SqliteMigrator(conn, SCHEMA)
    assert migrator.current_version() == detected  # read-only: nothing is written yet
    assert [m.version for m in migrator.pending()] == list(range(detected + 1, SCHEMA.latest + 1))
    assert [a.applied_at for a in migrator.applied()] == [0] * detected
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'schema_migrations'").fetchone() is None

    applied = migrator.apply()
    assert [m.version for m in applied] == list(range(detected + 1, SCHEMA.latest + 1))
    assert migrator.current_version() == SCHEMA.latest
    assert migrator.pending() == []
    assert migrator.apply() == []
    conn.close()

    db, store = await open_store(path)
    try:
        alice = await store.get_member("g:x", "alice")
        assert alice == Member(conv="g:x", uid="alice", role="owner", read_seq=4, version=1)
        await store.mark_sent("g:x", "alice", 5, 6, ["bob"])
        await store.hide_messages("g:x", "alice", [2], 7)
        assert await store.hidden_messages("g:x", "alice") == [2]
    finally:
        await db.close()


async def test_settings_columns_half_added_before_versioning_are_completed(tmp_path: Path) -> None:
    path = tmp_path / "half.db"
    make_old_database(path, *FIRST_SCHEMA, *SETTINGS_COLUMNS[:2])  # stopped after pinned and muted
    db, store = await open_store(path)
    try:
        m = await store.update_settings("g:x", "alice", SettingsChange(muted=True, draft="hi", cleared_seq=2), 3)
        assert m is not None
        assert (m.muted, m.draft, m.cleared_seq, m.read_seq) == (True, "hi", 2, 4)
    finally:
        await db.close()
    assert recorded(path)[-1] == ("relational", SCHEMA.latest)


async def test_a_fresh_database_gets_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db, _ = await open_store(path)
    await db.close()
    assert recorded(path) == [("relational", v) for v in range(1, SCHEMA.latest + 1)]


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db, _ = await open_store(path)
    await db.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO schema_migrations VALUES ('relational', ?, 'from the future', 0)", (SCHEMA.latest + 1,)
        )
    conn.close()
    db = SqliteDatabase(SqliteConfig(path=str(path)))
    try:
        with pytest.raises(SchemaError, match="newer than this code"):
            SqliteRelational(db)
    finally:
        await db.close()


async def test_message_state_columns_and_revisions_are_added_to_an_old_message_log(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # the schema before message operations (no state, no revisions)
        old.execute(
            "CREATE TABLE messages (msg_id INTEGER PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL,"
            " sender TEXT NOT NULL, cmid TEXT NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL, ts INTEGER NOT NULL)"
        )
        old.execute("CREATE UNIQUE INDEX messages_conv_seq ON messages (conv, seq)")
        old.execute("CREATE INDEX messages_client_id ON messages (sender, cmid)")
        old.execute(
            "CREATE TABLE conv_heads (conv TEXT PRIMARY KEY, max_seq INTEGER NOT NULL, version INTEGER NOT NULL)"
            " WITHOUT ROWID"
        )
        old.execute("INSERT INTO messages VALUES (501, 'g:x', 1, 'alice', 'c1', 'text', '{\"text\":\"hi\"}', 1000)")
        old.execute("INSERT INTO messages VALUES (502, 'g:x', 2, 'bob', 'c2', 'text', '{\"text\":\"yo\"}', 2000)")
        old.execute("INSERT INTO conv_heads VALUES ('g:x', 2, 7)")
    hi = Message("g:x", 1, "501", "alice", "c1", "text", {"text": "hi"}, 1000)
    yo = Message("g:x", 2, "502", "bob", "c2", "text", {"text": "yo"}, 2000)
    edit = Message("g:x", 3, "503", "alice", "op-1", "edit", {"target": 1, "target_id": "501", "version": 2}, 3000)
    recall = Message("g:x", 4, "504", "bob", "op-2", "recall", {"target": 2, "target_id": "502", "version": 2}, 4000)

    db = SqliteDatabase(SqliteConfig(path=str(path)))
    log = SqliteMessageLog(db)
    db.start()
    try:
        old_rows = await log.range("g:x", after=0, before=2**63 - 1, limit=10, newest=False)
        assert old_rows == [hi, yo]
        assert [(m.version, m.state, m.edited_at, m.reactions) for m in old_rows] == [(1, "", 0, {})] * 2
        assert await log.get("g:x", [2, 1]) == [hi, yo]
        assert await log.heads(["g:x"]) == {"g:x": ConvHead(conv="g:x", max_seq=2, version=7, last=yo)}
        assert await log.revisions("g:x", 1) == []
        # Old rows take operations.
        await log.apply(edit, Change(target=1, version=2, body={"text": "hi!"}, edited_at=3000), 8)
        await log.apply(recall, Change(target=2, version=2, state="recalled"), 9)
    finally:
        await db.close()

    # Opening it again changes nothing more, and keeps what the operations did.
    db = SqliteDatabase(SqliteConfig(path=str(path)))
    log = SqliteMessageLog(db)
    db.start()
    try:
        edited = Message("g:x", 1, "501", "alice", "c1", "text", {"text": "hi!"}, 1000, version=2, edited_at=3000)
        recalled = Message("g:x", 2, "502", "bob", "c2", "text", {}, 2000, version=2, state="recalled")
        assert await log.get("g:x", [1, 2, 3, 4]) == [edited, recalled, edit, recall]
        assert await log.revisions("g:x", 1) == [Revision(version=1, body={"text": "hi"}, ts=1000)]
        assert await log.max_seq("g:x") == 4
    finally:
        await db.close()


async def test_an_older_files_idempotency_key_indexes_are_dropped_and_its_recent_keys_found(tmp_path: Path) -> None:
    """Earlier releases indexed (sender, cmid) in the file; opening drops those indexes (the keys of recent rows
    are kept in memory instead) and still finds what the file holds, recent or older."""
    path = tmp_path / "old.db"
    now = now_ms()
    recent_id, old_id = snowflake_floor(now - 60_000) + 1, snowflake_floor(now - 3_600_000) + 1
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE messages (msg_id INTEGER PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL,"
            " sender TEXT NOT NULL, cmid TEXT NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL, ts INTEGER NOT NULL)"
        )
        old.execute("CREATE INDEX messages_client_id ON messages (sender, cmid)")
        old.execute("CREATE INDEX messages_client_key ON messages (msg_id >> 40, sender, cmid)")
        old.execute(
            f"INSERT INTO messages VALUES ({old_id}, 'g:x', 1, 'alice', 'c0', 'text', '{{}}', {now - 3_600_000})"
        )
        old.execute(
            f"INSERT INTO messages VALUES ({recent_id}, 'g:x', 2, 'alice', 'c1', 'text', '{{}}', {now - 60_000})"
        )
    old.close()

    db = SqliteDatabase(SqliteConfig(path=str(path)))
    log = SqliteMessageLog(db, key_horizon_s=360)
    db.start()
    try:
        indexes = {r[0] for r in db.reader.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert not {"messages_client_id", "messages_client_key"} & indexes
        found = await log.find_by_client_id("alice", "c1", since_ms=now - 300_000)
        assert found is not None
        assert found.msg_id == str(recent_id)
        assert await log.find_by_client_id("alice", "c1", since_ms=now - 30_000) is None  # stored before that
        assert await log.find_by_client_id("alice", "c0", since_ms=now - 300_000) is None  # before the window
        older = await log.find_by_client_id("alice", "c0", since_ms=now - 7_200_000)  # from further back: a scan
        assert older is not None
        assert older.msg_id == str(old_id)
    finally:
        await db.close()
