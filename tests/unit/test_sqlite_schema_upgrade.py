"""The SQLite adapters upgrade a database made by an earlier schema in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flare_im.backends.message_log.base import Change, ConvHead, Revision
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.relational.base import SettingsChange
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.protocol.frames import Message


async def test_member_settings_columns_are_added_to_an_old_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # the first schema, before conversation settings
        old.execute(
            "CREATE TABLE members (uid TEXT NOT NULL, conv TEXT NOT NULL, role TEXT NOT NULL,"
            " join_seq INTEGER NOT NULL, read_seq INTEGER NOT NULL, delivered_seq INTEGER NOT NULL,"
            " version INTEGER NOT NULL, left_conv INTEGER NOT NULL DEFAULT 0, joined_order INTEGER NOT NULL,"
            " PRIMARY KEY (uid, conv)) WITHOUT ROWID"
        )
        old.execute("INSERT INTO members VALUES ('alice', 'g:x', 'owner', 0, 4, 0, 1, 0, 1)")
    db = SqliteDatabase(SqliteConfig(path=str(path)))
    store = SqliteRelational(db)
    db.start()
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
    finally:
        await db.close()
    # Opening it again changes nothing more.
    db = SqliteDatabase(SqliteConfig(path=str(path)))
    SqliteRelational(db)
    db.start()
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
