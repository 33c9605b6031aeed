"""Page sizes of the embedded SQLite files: the store is made with small pages (``sqlite_page_size``), the search
index with SQLite's default, and a file that already exists keeps the page size it was made with."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flare_im.app import build_node
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.search.sqlite import INDEX_PAGE_SIZE
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.config import Settings
from flare_im.ids import EPOCH_MS, snowflake_floor
from flare_im.protocol.frames import Message

T = EPOCH_MS + 10**9


def page_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def message(seq: int, text: str) -> Message:
    return Message(
        conv="g:a", seq=seq, msg_id=str(snowflake_floor(T) + seq), sender="u", cmid=f"c{seq}", kind="text",
        body={"text": text}, ts=T,
    )  # fmt: skip


async def test_a_new_node_makes_the_store_with_small_pages_and_the_index_with_the_default(tmp_path: Path) -> None:
    node = await build_node(Settings.load({"data_dir": str(tmp_path)}, environ={}))
    try:
        await node.api.users.create_by_admin("alice")
    finally:
        await node.close()
    assert page_size(tmp_path / "flare.db") == Settings().sqlite_page_size == 1024
    assert page_size(tmp_path / "search.db") == INDEX_PAGE_SIZE == 4096


async def test_the_setting_chooses_the_page_size_of_a_new_store(tmp_path: Path) -> None:
    node = await build_node(Settings.load({"data_dir": str(tmp_path), "sqlite_page_size": 8192}, environ={}))
    await node.close()
    assert page_size(tmp_path / "flare.db") == 8192
    assert page_size(tmp_path / "search.db") == INDEX_PAGE_SIZE


async def test_an_existing_store_keeps_its_page_size_and_its_data(tmp_path: Path) -> None:
    path = tmp_path / "flare.db"
    old = SqliteDatabase(SqliteConfig(path=str(path), page_size=4096))
    log = SqliteMessageLog(old)
    old.start()
    await log.append(message(1, "before"), 1)
    await old.close()

    node = await build_node(Settings.load({"data_dir": str(tmp_path)}, environ={}))
    try:
        await node.api.users.create_by_admin("alice")
    finally:
        await node.close()
    assert page_size(path) == 4096
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT body FROM messages").fetchall() == [(b'{"text":"before"}',)]
        assert any("alice" in row for row in conn.execute("SELECT * FROM users"))
    finally:
        conn.close()


async def test_bodies_larger_than_a_page_round_trip(tmp_path: Path) -> None:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db"), page_size=1024))
    log = SqliteMessageLog(db)
    db.start()
    try:
        texts = {seq: f"{seq}:" + "x" * (seq * 3000) for seq in range(1, 6)}  # 3 KB to 15 KB: overflow pages
        for seq, text in texts.items():
            await log.append(message(seq, text), seq)
        got = await log.range("g:a", after=0, before=10, limit=10, newest=False)
        assert [(m.seq, m.body["text"]) for m in got] == sorted(texts.items())
    finally:
        await db.close()
    assert page_size(tmp_path / "flare.db") == 1024
