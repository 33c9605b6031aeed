"""The ClickHouse message log as an archive source (archive/clickhouse_source.py), on the real engines: every
page reads the same after a pass, the rows are gone from ClickHouse, a change made while a pass runs survives
it, operations on archived messages apply, a killed pass finishes on the next, and two passes never overlap."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import msgspec
import pytest
from tests.e2e.engines import clickhouse, create_database, drop_database
from tests.services import require
from tests.unit.test_archive import CONVS, HOUR, JAN, NOW, _msg

from flare_im.archive import clickhouse_source, pg_catalog
from flare_im.archive.archiver import RunReport
from flare_im.archive.clickhouse_source import ClickHouseSource
from flare_im.archive.pg_catalog import ArchiveBusy, PostgresCatalog
from flare_im.archive.reader import ArchiveCache, ArchivedMessageLog
from flare_im.archive.worker import run_archive_worker
from flare_im.backends.clickhouse_client import connect
from flare_im.backends.message_log.base import Change, MessageLog
from flare_im.backends.message_log.clickhouse import ClickHouseConfig, ClickHouseMessageLog
from flare_im.backends.objects.local import LocalConfig, LocalObjectStore
from flare_im.backends.search.base import SearchQuery, SearchScope
from flare_im.backends.search.clickhouse import ClickHouseSearchIndex
from flare_im.config import Settings


@dataclass
class Engines:
    postgres: str
    clickhouse: str
    objects: LocalObjectStore


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[Engines]:
    pg, ch = require("postgres"), require("clickhouse")
    name = f"flare_archive_{uuid.uuid4().hex[:10]}"
    database_url = await create_database(pg, name)
    clickhouse(ch, f"CREATE DATABASE {name}")
    host = ch.split("://", 1)[1].split("/", 1)[0]
    try:
        yield Engines(database_url, f"clickhouse://{host}/{name}", LocalObjectStore(LocalConfig(root=str(tmp_path))))
    finally:
        await drop_database(pg, name)
        clickhouse(ch, f"DROP DATABASE IF EXISTS {name}")


@contextlib.asynccontextmanager
async def _log(e: Engines, *, archived: bool) -> AsyncIterator[MessageLog]:
    hot = await ClickHouseMessageLog.open(ClickHouseConfig(url=e.clickhouse))
    pool = await asyncpg.create_pool(e.postgres, min_size=1, max_size=2)
    catalog = PostgresCatalog(pool, refresh_s=0.05)
    client = connect(e.clickhouse)
    try:
        source = ClickHouseSource(client)
        yield (
            ArchivedMessageLog(hot, catalog, ArchiveCache(e.objects, max_groups=4), source.rehydrate)
            if archived
            else hot
        )
    finally:
        await catalog.close()
        await client.close()
        await hot.close()


async def _fill(log: MessageLog) -> dict[str, int]:
    """As tests/unit/test_archive.py fills SQLite: ~3 months of old messages, operations on three of them,
    then 20 recent ones (appends queued together: the adapter writes them in batches)."""
    tops: dict[str, int] = {}
    version = 0
    for conv in CONVS:
        appends = []
        for i in range(500):
            version += 1
            appends.append(log.append(_msg(conv, i + 1, JAN + i * 5 * HOUR), version))
        await asyncio.gather(*appends)
        seq = 500
        ops = [
            (5, Change(target=5, version=2, body={"text": "edited"}, edited_at=JAN + 2000 * HOUR), "edit"),
            (6, Change(target=6, version=1, reaction=("👍", "bob", True)), "react"),
            (8, Change(target=8, version=2, state="recalled"), "recall"),
        ]
        for target, change, kind in ops:
            seq += 1
            version += 1
            await log.apply(_msg(conv, seq, JAN + 2000 * HOUR + seq, kind, {"target": target}), change, version)
        recent = []
        for i in range(20):
            seq += 1
            version += 1
            recent.append(log.append(_msg(conv, seq, NOW - 60_000 + i), version))
        await asyncio.gather(*recent)
        tops[conv] = seq
    return tops


async def _pages(log: MessageLog, tops: dict[str, int]) -> list[bytes]:
    enc = msgspec.json.encode
    out = []
    for conv, top in tops.items():
        for limit in (7, 50, 1000):
            after = 0
            while after < top:
                page = await log.range(conv, after=after, before=2**63 - 1, limit=limit, newest=False)
                out.append(enc(page))
                after = page[-1].seq
            before = top + 1
            while before > 1:
                page = await log.range(conv, after=0, before=before, limit=limit, newest=True)
                out.append(enc(page))
                before = page[0].seq
        for after, before in ((0, 3), (90, 400), (495, 520), (3, 9)):
            for newest in (False, True):
                out.append(enc(await log.range(conv, after=after, before=before, limit=30, newest=newest)))
        out.append(enc(await log.get(conv, [1, 5, 6, 8, 177, top, top + 5])))
        out.append(enc(await log.revisions(conv, 5)))
    heads = await log.heads(list(CONVS))
    out.append(enc(sorted((c, h.max_seq, h.version, h.last) for c, h in heads.items())))
    return out


async def _pass(e: Engines, source: ClickHouseSource | None = None) -> RunReport:
    client = connect(e.clickhouse)
    try:
        async with pg_catalog.exclusive(e.postgres) as conn:
            return await clickhouse_source.run(
                source or ClickHouseSource(client),
                conn,
                e.objects,
                older_than_s=86400,
                grace_s=0.1,
                now=lambda: NOW / 1000,
            )
    finally:
        await client.close()


def _count(e: Engines, where: str = "1") -> int:
    return int(clickhouse(e.clickhouse, f"SELECT count() FROM {e.clickhouse.rsplit('/', 1)[1]}.messages WHERE {where}"))


async def test_every_page_is_the_same_and_clickhouse_no_longer_holds_the_rows(engines: Engines) -> None:
    async with _log(engines, archived=False) as log:
        tops = await _fill(log)
        before = await _pages(log, tops)

    report = await _pass(engines)

    assert (report.parts, report.rows) == (2 * 4, 2 * 503)  # Jan, Feb, Mar, Apr (the operations) of each
    assert _count(engines, f"ts < {NOW - 86400_000}") == 0
    assert _count(engines) == 2 * 20  # the recent ones, one version each
    async with _log(engines, archived=True) as log:
        assert await _pages(log, tops) == before
    assert await _pass(engines) == RunReport()  # nothing more to do
    conn = await asyncpg.connect(engines.postgres)
    try:
        parts = await pg_catalog.parts(conn)
    finally:
        await conn.close()
    assert len(parts) == 8
    assert all(p.removed for p in parts)


async def test_a_change_made_while_the_pass_runs_survives_it(engines: Engines) -> None:
    conv = CONVS[0]
    async with _log(engines, archived=False) as log:
        await _fill(log)
    client = connect(engines.clickhouse)
    source = ClickHouseSource(client)
    remove = source.remove

    async def react_then_remove(parts: Sequence[pg_catalog.CatalogPart]) -> None:
        # After the parts were written and recorded, before their rows go: a reaction to an archived message.
        async with _log(engines, archived=True) as live:
            await live.apply(
                _msg(conv, 600, NOW, "react", {"target": 100}),
                Change(target=100, version=1, reaction=("🔥", "carol", True)),
                10**6,
            )
        await remove(parts)

    source.remove = react_then_remove  # type: ignore[method-assign]
    try:
        assert (await _pass(engines, source)).parts == 8
    finally:
        await client.close()
    assert _count(engines, f"conv = '{conv}' AND seq = 100") == 1  # the newer version stayed
    async with _log(engines, archived=True) as log:
        [m] = await log.get(conv, [100])
        assert m.reactions == {"🔥": ["carol"]}
        page = await log.range(conv, after=95, before=105, limit=10, newest=False)
        assert [p.seq for p in page] == list(range(96, 105))
        assert page[4] == m


async def test_operations_on_archived_messages_apply(engines: Engines) -> None:
    conv = CONVS[1]
    async with _log(engines, archived=False) as log:
        tops = await _fill(log)
    await _pass(engines)
    top = tops[conv]
    async with _log(engines, archived=True) as log:
        await log.apply(
            _msg(conv, top + 1, NOW, "recall", {"target": 5}), Change(target=5, version=3, state="recalled"), 10**6
        )
        await log.apply(
            _msg(conv, top + 2, NOW, "react", {"target": 200}),
            Change(target=200, version=1, reaction=("👀", "bob", True)),
            10**6 + 1,
        )
        [recalled, reacted] = await log.get(conv, [5, 200])
        assert (recalled.state, recalled.body, recalled.version) == ("recalled", {}, 3)
        assert reacted.reactions == {"👀": ["bob"]}
        page = await log.range(conv, after=0, before=300, limit=300, newest=True)
        assert [m.seq for m in page] == list(range(1, 300))
        assert page[4] == recalled
        assert page[199] == reacted
    # Copied back and changed once each: 5, its edit event (501: a recall reduces it to its references), 200.
    assert _count(engines, f"conv = '{conv}' AND seq <= 503") == 6
    await _pass(engines)  # a later pass leaves the copies alone: they are below the archived prefix
    async with _log(engines, archived=True) as log:
        assert (await log.get(conv, [5]))[0].state == "recalled"


async def test_a_killed_pass_finishes_on_the_next(engines: Engines) -> None:
    async with _log(engines, archived=False) as log:
        tops = await _fill(log)
        before = await _pages(log, tops)
    rows = _count(engines)
    client = connect(engines.clickhouse)
    source = ClickHouseSource(client)

    async def killed(parts: Sequence[pg_catalog.CatalogPart]) -> None:
        raise KeyboardInterrupt  # after the parts were recorded, before their rows left ClickHouse

    source.remove = killed  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            await _pass(engines, source)
    finally:
        await client.close()
    assert _count(engines) == rows
    async with _log(engines, archived=True) as log:  # both tiers hold the rows meanwhile: the same pages
        assert await _pages(log, tops) == before
    report = await _pass(engines)
    assert report.parts == 0  # nothing new to write: the recorded parts' rows are removed
    assert _count(engines) == 40
    async with _log(engines, archived=True) as log:
        assert await _pages(log, tops) == before


async def test_two_passes_never_overlap(engines: Engines) -> None:
    async with _log(engines, archived=False):
        pass  # the tables
    async with pg_catalog.exclusive(engines.postgres):
        with pytest.raises(ArchiveBusy):
            await _pass(engines)
    assert await _pass(engines) == RunReport()


async def test_the_worker_refuses_settings_it_cannot_archive_with() -> None:
    with pytest.raises(ValueError, match="needs a cluster"):
        await run_archive_worker(Settings())
    cluster = Settings(
        cache_url="redis://127.0.0.1:1/0",
        queue_url="kafka://127.0.0.1:1",
        message_store_url="clickhouse://127.0.0.1:1/x",
        database_url="postgresql://postgres@127.0.0.1:1/x",
    )
    with pytest.raises(ValueError, match="object_store_url"):
        await run_archive_worker(cluster)
    with pytest.raises(ValueError, match="PostgreSQL"):
        await run_archive_worker(cluster.replace(database_url="", object_store_url="file:///tmp/x"))
    with pytest.raises(ValueError, match="archive_grace_s"):
        Settings.load(environ={"FLARE_ARCHIVE_REFRESH_S": "10", "FLARE_ARCHIVE_GRACE_S": "5"})
    with pytest.raises(ValueError, match="archive_interval_s"):
        Settings.load(environ={"FLARE_ARCHIVE_INTERVAL_S": "0"})


async def test_operations_on_one_archived_message_apply_in_call_order(engines: Engines) -> None:
    """The store worker gathers a batch's writes: three edits of one archived message, queued together, must
    apply in order (each is checked against the version the one before it made)."""
    conv = CONVS[0]
    async with _log(engines, archived=False) as log:
        tops = await _fill(log)
    await _pass(engines)
    top = tops[conv]
    async with _log(engines, archived=True) as log:
        edits = [
            log.apply(
                _msg(conv, top + i, NOW + i, "edit", {"target": 10}),
                Change(target=10, version=i + 1, body={"text": f"edit {i}"}, edited_at=NOW + i),
                10**6 + i,
            )
            for i in (1, 2, 3)
        ]
        await asyncio.gather(*edits)
        [edited] = await log.get(conv, [10])
        assert (edited.version, edited.body) == (4, {"text": "edit 3"})
        assert [r.body for r in await log.revisions(conv, 10)] == [
            {"text": "message 10 of g:team"},
            {"text": "edit 1"},
            {"text": "edit 2"},
        ]


async def test_search_finds_archived_messages_in_their_current_state(engines: Engines) -> None:
    """The pass writes search_archive; a search reads it with the reader's scopes and reads each hit through
    the archive: once each even when a part's text was written twice, an operation made after archiving wins."""
    conv = CONVS[0]
    async with _log(engines, archived=False) as log:
        await _fill(log)
    await _pass(engines)
    async with _log(engines, archived=True) as log:
        assert isinstance(log, ArchivedMessageLog)
        client = connect(engines.clickhouse)
        index = await ClickHouseSearchIndex.open(engines.clickhouse, archive=log)
        try:
            # A pass killed after writing a part's text and before recording it writes the text again.
            for key in await log.part_keys():
                await ClickHouseSource(client).index_for_search(await log.part_rows(key))

            async def found(*terms: str, floor: int = 0, convs: tuple[str, ...] = (conv,)) -> list[int]:
                scopes = [SearchScope(c, floor=floor) for c in convs]
                return [h.message.seq for h in await index.search(SearchQuery(terms=terms, scopes=scopes))]

            assert await found("177") == [177]
            assert await found("177", convs=()) == []
            assert await found("177", floor=177) == []
            assert await found("edited") == [5]  # edited before the pass
            await log.apply(
                _msg(conv, 900, NOW, "recall", {"target": 200}), Change(target=200, version=2, state="recalled"), 10**6
            )
            await log.apply(
                _msg(conv, 901, NOW, "edit", {"target": 300}),
                Change(target=300, version=2, body={"text": "renamed"}, edited_at=NOW),
                10**6 + 1,
            )
            assert await found("200") == []
            assert await found("300") == []
            assert await found("renamed") == [300]
        finally:
            await index.close()
            await client.close()
