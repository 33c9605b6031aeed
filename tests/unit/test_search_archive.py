"""The SQLite search index over the cold tier (backends/search/sqlite.py, archived.py): archived messages are
found with every condition a hot one is (scopes, floors, hidden, sender, kind, time, cursor), each part is read
once, an operation on an archived message moves it back to the hot index, and an index made after the archive
run builds itself from the parts without undoing such an operation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from flare_im.archive import archiver
from flare_im.archive.reader import ArchiveCache, ArchivedMessageLog, load_catalog
from flare_im.backends.message_log.base import Change
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.objects.local import LocalConfig, LocalObjectStore
from flare_im.backends.search.archived import hydrate
from flare_im.backends.search.base import SearchQuery, SearchScope
from flare_im.backends.search.feed import FeedingLog
from flare_im.backends.search.sqlite import SqliteSearchIndex
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.ids import snowflake_floor
from flare_im.protocol.frames import Message

JAN = int(datetime(2025, 1, 10, tzinfo=UTC).timestamp() * 1000)
NOW = datetime(2025, 6, 1, tzinfo=UTC).timestamp()
HOUR = 3_600_000


def _msg(conv: str, seq: int, text: str, *, kind: str = "text", sender: str = "alice", at: int = 0) -> Message:
    ts = JAN + at
    return Message(
        conv=conv,
        seq=seq,
        msg_id=str(snowflake_floor(ts) + seq + (4096 if conv == "g:b" else 0)),
        sender=sender,
        cmid=f"{conv}-{seq}",
        kind=kind,
        body={"text": text} if text else {},
        ts=ts,
    )


@contextlib.asynccontextmanager
async def _opened(
    tmp_path: Path, *, archived: bool
) -> AsyncIterator[tuple[FeedingLog, SqliteSearchIndex, ArchiveCache]]:
    """The log (fed to the index) and the index, read through the archive when ``archived``."""
    store = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db")))
    search = SqliteDatabase(SqliteConfig(path=str(tmp_path / "search.db")))
    objects = LocalObjectStore(LocalConfig(root=str(tmp_path / "media")))
    cache = ArchiveCache(objects)
    hot = SqliteMessageLog(store)
    log: SqliteMessageLog | ArchivedMessageLog = hot
    index = SqliteSearchIndex(search, store)
    if archived:
        log = ArchivedMessageLog.on_sqlite(hot, store, load_catalog(store), cache)
        index.attach_archive(log)
    store.start()
    search.start()
    index.start()
    try:
        await index.flush()
        yield FeedingLog(log, index.written), index, cache
    finally:
        await index.close()
        await search.close()
        await store.close()
        await objects.close()


async def _archive(tmp_path: Path) -> int:
    conn = archiver.open_catalog(str(tmp_path / "flare.db"))
    objects = LocalObjectStore(LocalConfig(root=str(tmp_path / "media")))
    try:
        report = await archiver.run(conn, objects, older_than_s=86400, now=lambda: NOW)
    finally:
        conn.close()
        await objects.close()
    return report.parts


async def _found(index: SqliteSearchIndex, *terms: str, convs: tuple[str, ...] = ("g:a",), **kw: object) -> list[int]:
    scopes = kw.pop("scopes", [SearchScope(c) for c in convs])
    query = SearchQuery(terms=terms, scopes=scopes, **kw)  # type: ignore[arg-type]
    return [h.message.seq for h in await index.search(query)]


async def _write(log: FeedingLog) -> None:
    await log.append(_msg("g:a", 1, "the harbour map"), 1)
    await log.append(_msg("g:a", 2, "harbour tour", sender="bob", at=HOUR), 2)
    await log.append(_msg("g:a", 3, "harbour at noon", at=2 * HOUR), 3)
    await log.append(_msg("g:a", 4, "ok then", at=3 * HOUR), 4)
    await log.append(_msg("g:a", 5, "harbour in february", at=40 * 24 * HOUR), 5)  # another part
    await log.append(_msg("g:b", 1, "harbour elsewhere"), 6)


async def test_archived_messages_are_found_under_every_condition(tmp_path: Path) -> None:
    async with _opened(tmp_path, archived=False) as (log, index, _):
        await _write(log)
        await index.flush()
        assert await _found(index, "harbour") == [5, 3, 2, 1]
    assert await _archive(tmp_path) == 3

    async with _opened(tmp_path, archived=True) as (log, index, cache):
        assert cache.fetches == 3  # every part read once at start
        assert await _found(index, "HARBOUR") == [5, 3, 2, 1]
        assert await _found(index, "ok") == [4]  # a short term: the indexed text scanned
        assert await _found(index, "harbour", convs=("g:b",)) == [1]
        assert await _found(index, "harbour", scopes=[SearchScope("g:a", floor=2, hidden=frozenset({5}))]) == [3]
        assert await _found(index, "harbour", sender="bob") == [2]
        assert await _found(index, "harbour", kind="file") == []
        assert await _found(index, "harbour", since=JAN + HOUR, until=JAN + 3 * HOUR) == [3, 2]
        cursor = int(_msg("g:a", 3, "", at=2 * HOUR).msg_id)
        assert await _found(index, "harbour", before=cursor) == [2, 1]
        assert await _found(index, "harbour", limit=2) == [5, 3]
        assert await _found(index, "harbour", convs=()) == []

        # An operation copies the message back into the store: found there by its new text only.
        await log.apply(
            _msg("g:a", 7, "", kind="edit", at=50 * 24 * HOUR), Change(target=2, version=2, body={"text": "station"}), 7
        )
        await log.apply(_msg("g:a", 8, "", kind="recall", at=50 * 24 * HOUR), Change(target=3, version=2, state="x"), 8)
        await index.flush()
        assert await _found(index, "harbour") == [5, 1]
        assert await _found(index, "station") == [2]
        located = {r[0] for r in index._db.fetchall("SELECT seq FROM search_archived WHERE conv = 'g:a'")}
        assert located == {1, 4, 5}  # the copies left search_archived

    async with _opened(tmp_path, archived=True) as (_, index, cache):
        assert cache.fetches == 0  # no part read again
        assert await _found(index, "harbour") == [5, 1]
        assert await _found(index, "station") == [2]


async def test_an_index_made_after_the_archive_run_reads_the_parts(tmp_path: Path) -> None:
    async with _opened(tmp_path, archived=False) as (log, _, _):
        await _write(log)
    await _archive(tmp_path)
    async with _opened(tmp_path, archived=True) as (log, _, _):
        await log.apply(
            _msg("g:a", 7, "", kind="edit", at=50 * 24 * HOUR), Change(target=2, version=2, body={"text": "station"}), 7
        )
    for name in ("search.db", "search.db-wal", "search.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    async with _opened(tmp_path, archived=True) as (_, index, cache):
        assert cache.fetches == 3
        assert await _found(index, "harbour") == [5, 3, 1]
        assert await _found(index, "station") == [2]
        # The part's text of 2 is not indexed over its copy's: the copy in the store is the current state.
        two = int(_msg("g:a", 2, "", at=HOUR).msg_id)
        assert index._db.fetchall("SELECT text FROM search_docs WHERE msg_id = ?", (two,)) == [("station",)]
        assert index._db.fetchall("SELECT 1 FROM search_archived WHERE msg_id = ?", (two,)) == []
        assert await _found(index, "elsewhere", convs=("g:a", "g:b")) == [1]


class _Everything:
    """A read that returns whatever is asked for: hydrate must apply the scopes itself."""

    async def get(self, conv: str, seqs: list[int]) -> list[Message]:
        return [_msg(conv, s, "harbour") for s in seqs]


async def test_hydrate_keeps_only_what_the_scopes_allow() -> None:
    query = SearchQuery(terms=("harbour",), scopes=[SearchScope("g:a", floor=1, hidden=frozenset({3}))])
    hits = await hydrate(_Everything().get, [("g:a", 1), ("g:a", 2), ("g:a", 3), ("g:b", 4)], query)
    assert [(h.message.conv, h.message.seq) for h in hits] == [("g:a", 2)]
