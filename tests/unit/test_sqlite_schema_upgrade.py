"""The SQLite relational adapter upgrades a database made by an earlier schema in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flare_im.backends.relational.base import SettingsChange
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase


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
