"""The SQLite search index's own promises (backends/search/sqlite.py): it follows the store's writes, catches up
at start with what it missed, never finds text a message no longer has, and costs the store nothing when off."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from flare_im.backends.message_log.base import Change
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.search.base import SearchQuery, SearchScope
from flare_im.backends.search.feed import FeedingLog
from flare_im.backends.search.sqlite import SqliteSearchIndex, grams, match_expression
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.ids import EPOCH_MS, snowflake_floor
from flare_im.protocol.frames import Message

T = EPOCH_MS + 10**9


def _msg(seq: int, text: str, *, kind: str = "text", at: int = 0) -> Message:
    return Message(
        conv="g:a",
        seq=seq,
        msg_id=str(snowflake_floor(T + at) + seq),
        sender="u",
        cmid=f"c{seq}",
        kind=kind,
        body={"text": text} if text else {"target": 1},
        ts=T + at,
    )


async def _found(index: SqliteSearchIndex, term: str) -> list[int]:
    hits = await index.search(SearchQuery(terms=(term,), scopes=[SearchScope("g:a")]))
    return [h.message.seq for h in hits]


@contextlib.asynccontextmanager
async def _opened(tmp_path: Path) -> AsyncIterator[tuple[SqliteMessageLog, SqliteSearchIndex]]:
    store = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db")))
    search = SqliteDatabase(SqliteConfig(path=str(tmp_path / "search.db")))
    log = SqliteMessageLog(store)
    index = SqliteSearchIndex(search, store)
    store.start()
    search.start()
    index.start()
    try:
        yield log, index
    finally:
        await index.close()
        await search.close()
        await store.close()


async def test_the_start_indexes_what_was_written_without_it(tmp_path: Path) -> None:
    store = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db")))
    log = SqliteMessageLog(store)
    store.start()
    await log.append(_msg(1, "written before any index"), 1)
    await log.append(_msg(2, "recalled before any index"), 2)
    await log.apply(_msg(3, ""), Change(target=2, version=2, state="recalled"), 3)
    await store.close()

    async with _opened(tmp_path) as (log, index):
        await index.flush()
        assert await _found(index, "index") == [1]
    # Off again (the log not fed), then on: the catch-up reads from before what it indexed last.
    store = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db")))
    log = SqliteMessageLog(store)
    store.start()
    await log.append(_msg(4, "written while search was off", at=1000), 4)
    await log.apply(_msg(5, "", kind="edit", at=1000), Change(target=1, version=2, body={"text": "edited"}), 5)
    await store.close()
    async with _opened(tmp_path) as (log, index):
        await index.flush()
        assert await _found(index, "search") == [4]
        assert await _found(index, "edited") == [1]
        assert await _found(index, "before") == []


async def test_text_a_message_no_longer_has_is_never_found(tmp_path: Path) -> None:
    async with _opened(tmp_path) as (log, index):
        fed = FeedingLog(log, index.written)
        await fed.append(_msg(1, "the old harbour"), 1)
        await index.flush()
        assert await _found(index, "harbour") == [1]
        # Edited and recalled behind the follower's back (not fed): the index still holds the old text,
        # but a search checks the stored message.
        await log.apply(_msg(2, "", kind="edit"), Change(target=1, version=2, body={"text": "the station"}), 2)
        assert await _found(index, "harbour") == []
        await fed.append(_msg(3, "another harbour"), 3)
        await log.apply(_msg(4, "", kind="recall"), Change(target=3, version=2, state="recalled"), 4)
        await index.flush()
        assert await _found(index, "harbour") == []


async def test_an_id_that_was_never_stored_does_not_hold_up_the_others(tmp_path: Path) -> None:
    async with _opened(tmp_path) as (log, index):
        index.written(123)  # an append that failed: its row never appears
        await log.append(_msg(1, "stored"), 1)
        index.written(int(_msg(1, "stored").msg_id))
        for _ in range(100):
            if await _found(index, "stored") == [1]:
                break
            await asyncio.sleep(0.05)
        assert await _found(index, "stored") == [1]


def test_grams_and_match_expressions() -> None:
    assert grams("北京 ok") == "北北北京京京" + " " * 9
    assert grams("hello") == ""
    assert match_expression(["北京", "京", "hello", "ok"]) == (
        'grams : "北北京" AND grams : "京京京" AND text : "hel" AND text : "ell" AND text : "llo"'
    )
    assert match_expression(["ok"]) == ""
    assert match_expression(['a"b']) == 'text : "a""b"'
    assert match_expression(["xxxxx"]) == 'text : "xxx"'  # each trigram once


async def test_a_term_is_found_by_its_trigrams_and_checked_against_the_text(tmp_path: Path) -> None:
    async with _opened(tmp_path) as (log, index):
        fed = FeedingLog(log, index.written)
        await fed.append(_msg(1, "hel, ell and llo"), 1)  # every trigram of "hello", not the word
        await fed.append(_msg(2, "Hello there"), 2)
        await fed.append(_msg(3, "x" * 64), 3)
        await index.flush()
        assert await _found(index, "hello") == [2]
        assert await _found(index, "xxxxx") == [3]
        assert await _found(index, "x" * 65) == []


async def test_a_repeated_trigram_costs_the_index_no_positions(tmp_path: Path) -> None:
    # With positions a text of 64 "x" cost ~65 bytes of index each (and FTS5 merges one term's doclist in
    # one step); the index keeps only which column holds it.
    async with _opened(tmp_path) as (log, index):
        fed = FeedingLog(log, index.written)
        for seq in range(1, 2001):
            await fed.append(_msg(seq, "x" * 64), seq)
        await index.flush()
        [size] = index._db.fetchone("SELECT sum(length(block)) FROM search_fts_data")
        assert size < 2000 * 12
        assert len(await _found(index, "xxxx")) == 20


async def test_an_index_in_the_older_format_is_rebuilt_from_the_store(tmp_path: Path) -> None:
    async with _opened(tmp_path) as (log, index):
        await FeedingLog(log, index.written).append(_msg(1, "kept in the store"), 1)
        await index.flush()
    # The table as it was made before (positions kept), holding an entry the store does not have.
    old = sqlite3.connect(tmp_path / "search.db")
    old.executescript(
        "DROP TABLE search_fts; CREATE VIRTUAL TABLE search_fts USING fts5("
        "text, grams, content = '', tokenize = 'trigram case_sensitive 0');"
        "INSERT INTO search_fts (rowid, text, grams) VALUES (1, 'only in the old index', '');"
    )
    old.close()
    async with _opened(tmp_path) as (log, index):
        await index.flush()
        [sql] = index._db.fetchone("SELECT sql FROM sqlite_master WHERE name = 'search_fts'")
        assert "detail = column" in sql
        assert await _found(index, "store") == [1]
        [rows] = index._db.fetchone("SELECT count(*) FROM search_docs")
        assert rows == 1


async def test_a_drained_backlog_does_not_keep_its_table(tmp_path: Path) -> None:
    # A dict keeps its largest table after deletions: the follower's map of pending ids, once drained of a
    # backlog, would hold that memory and make each later batch walk the empty slots to find the oldest id.
    async with _opened(tmp_path) as (log, index):
        fed = FeedingLog(log, index.written)
        backlog = 30_000
        await asyncio.gather(*(fed.append(_msg(seq, f"backlog {seq}"), seq) for seq in range(1, backlog + 1)))
        await index.flush()
        assert index.lag() == (0, 0.0)
        assert index.indexed >= backlog  # the start's catch-up may read some of them too
        assert sys.getsizeof(index._pending) < 10_000  # a few KiB, not the ~1 MiB of 30,000 slots
        await fed.append(_msg(backlog + 1, "after the backlog"), backlog + 1)
        await index.flush()
        assert await _found(index, "after the") == [backlog + 1]
