"""What searching the cold tier costs: search latency before and after archiving, and the bytes search keeps.

Run: .venv/bin/python bench/search_archive.py [messages] [conversations] [clickhouse_url] [postgres_url]
(defaults: 100000 100 clickhouse://127.0.0.1:18123/default postgresql://postgres@127.0.0.1:5432/postgres;
a ClickHouse URL of "-" skips the cluster half).

The messages of bench/archive_size.py (90 days, 200 to 110 days ago) for one user who is in every
conversation. Embedded: SQLite store and search.db (the index built by its start-up catch-up), the first 60
days archived (archiver.run, a local directory as the object store), the index reopened on the archive reader
(it reads the new parts once: timed). Cluster: a scratch ClickHouse database and PostgreSQL catalog, a real
archive pass (archive/clickhouse_source.py, no grace period). Queries, each timed before and after archiving
(the same page of results both times):

- rare: two words of one message, for 40 messages spread over the 90 days (few hits: the search reads every
  month, archived ones too);
- common, cursor in archive: 40 common words, the page after a cursor at the archive boundary (every hit is
  archived: what a user paging back into old months pays);
- the first page of a common word (hot hits only; what archiving adds when the archive is not reached).

The first archived search of a run reads each part's row groups from the object store (ArchiveCache): the
"cold" figure is that first query, the percentiles are over the repeated ones. Bytes: search.db's
``search_archived`` table and index (dbstat), ClickHouse's ``search_archive`` table after OPTIMIZE FINAL.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import msgspec
from archive_size import _messages

from flare_im.archive import archiver, clickhouse_source, pg_catalog
from flare_im.archive.clickhouse_source import ClickHouseSource
from flare_im.archive.cluster import ClusterArchivedLog
from flare_im.archive.pg_catalog import PostgresCatalog
from flare_im.archive.reader import ArchiveCache, ArchivedMessageLog, load_catalog
from flare_im.backends.clickhouse_client import connect
from flare_im.backends.message_log.clickhouse import ClickHouseConfig, ClickHouseMessageLog
from flare_im.backends.message_log.clickhouse_schema import MessageRow
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.objects.local import LocalConfig, LocalObjectStore
from flare_im.backends.search.base import SearchIndex, SearchQuery, SearchScope
from flare_im.backends.search.clickhouse import ClickHouseSearchIndex
from flare_im.backends.search.sqlite import SqliteSearchIndex
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.protocol.frames import Message

ARCHIVED_DAYS = 140  # older than this is archived: the first 60 of the 90 days
Query = tuple[str, SearchQuery]


def _queries(messages: list[Message], boundary: int) -> list[Query]:
    counts = collections.Counter(w for m in messages for w in set(str(m.body["text"]).split()) if len(w) >= 4)
    ranked = [w for w, _ in counts.most_common()]
    scopes = [SearchScope(c) for c in sorted({m.conv for m in messages})]
    common = ranked[:40]
    # Two words of one message, every 1/40th of the history: few hits, spread over every month.
    pairs = [str(m.body["text"]).split() for m in messages[:: max(1, len(messages) // 40)]]
    rare = [(words[0], words[-1]) for words in pairs if len(words) >= 2 and len(words[0]) >= 3 <= len(words[-1])]
    out: list[Query] = [("rare", SearchQuery(terms=t, scopes=scopes)) for t in rare]
    out += [("common, cursor in archive", SearchQuery(terms=(w,), scopes=scopes, before=boundary)) for w in common]
    out += [("common, first page", SearchQuery(terms=(w,), scopes=scopes)) for w in common]
    return out


async def _timed(index: SearchIndex, queries: list[Query], label: str) -> dict[str, list[tuple[str, int]]]:
    """Every query 4 times: of the first round, each kind's first query is reported (caches cold) and the
    pages are returned; the other 3 rounds give the percentiles."""
    pages: dict[str, list[tuple[str, int]]] = {}
    times: dict[str, list[float]] = collections.defaultdict(list)
    cold: dict[str, float] = {}
    for round_ in range(4):
        for kind, q in queries:
            t0 = time.perf_counter()
            hits = await index.search(q)
            took = (time.perf_counter() - t0) * 1000
            if round_ == 0:
                cold.setdefault(kind, took)
                pages[f"{kind}:{' '.join(q.terms)}"] = [(h.message.conv, h.message.seq) for h in hits]
            else:
                times[kind].append(took)
    for kind, ts in times.items():
        ts.sort()
        p99 = ts[min(len(ts) - 1, int(len(ts) * 0.99))]
        print(
            f"  {label} {kind}: p50 {statistics.median(ts):.1f} ms, p99 {p99:.1f} ms (first query {cold[kind]:.1f} ms)"
        )
    return pages


async def embedded(messages: list[Message], boundary: int) -> None:
    queries = _queries(messages, boundary)
    with tempfile.TemporaryDirectory() as tmp:
        path, search_path = Path(tmp) / "flare.db", Path(tmp) / "search.db"

        async def opened(archive: Callable[[SqliteDatabase, SqliteMessageLog], Awaitable[ArchivedMessageLog]] | None):
            store = SqliteDatabase(SqliteConfig(path=str(path), synchronous="OFF"))
            search = SqliteDatabase(SqliteConfig(path=str(search_path), synchronous="OFF"))
            log = SqliteMessageLog(store)
            index = SqliteSearchIndex(search, store)
            if archive is not None:
                index.attach_archive(await archive(store, log))
            store.start()
            search.start()
            t0 = time.monotonic()
            index.start()
            await index.flush()
            return store, search, log, index, time.monotonic() - t0

        store, search, log, index, _ = await opened(None)
        for i in range(0, len(messages), 2000):
            await asyncio.gather(*(log.append(m, i + j + 1) for j, m in enumerate(messages[i : i + 2000])))
        await index.close()
        await search.close()
        await store.close()
        store, search, log, index, took = await opened(None)
        print(f"embedded: {len(messages)} messages indexed at start in {took:.1f} s")
        before = await _timed(index, queries, "hot only")
        await index.close()
        await search.close()
        await store.close()

        conn = archiver.open_catalog(str(path))
        objects = LocalObjectStore(LocalConfig(root=str(Path(tmp) / "media")))
        report = await archiver.run(conn, objects, older_than_s=ARCHIVED_DAYS * 86400)
        conn.close()

        async def reader(db: SqliteDatabase, hot: SqliteMessageLog) -> ArchivedMessageLog:
            return ArchivedMessageLog.on_sqlite(hot, db, load_catalog(db), ArchiveCache(objects))

        store, search, log, index, took = await opened(reader)
        print(f"  archived {report.rows} messages in {report.parts} parts; the index read them in {took:.1f} s")
        after = await _timed(index, queries, "archived")
        assert after == before, "archiving changed what search finds"
        await index.close()
        await search.close()
        await store.close()
        await objects.close()
        db = sqlite3.connect(search_path)
        located = db.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name IN ('search_archived', 'search_archived_conv')"
        ).fetchone()[0]
        total = search_path.stat().st_size
        db.close()
        print(f"  search_archived (located archived messages): {located / report.rows:.1f} bytes/message")
        print(f"  search.db: {total / len(messages):.1f} bytes/message (FTS entries of both tiers; kept)")


async def cluster(messages: list[Message], boundary: int, clickhouse: str, postgres: str) -> None:
    queries = _queries(messages, boundary)
    name = f"flare_search_archive_{int(time.time())}"
    admin = connect(clickhouse)
    await admin.query(f"CREATE DATABASE {name}")
    pg = await asyncpg.connect(postgres)
    await pg.execute(f'CREATE DATABASE "{name}"')
    url = clickhouse.rsplit("/", 1)[0] + f"/{name}"
    pg_url = postgres.rsplit("/", 1)[0] + f"/{name}"
    client = connect(url)
    hot = await ClickHouseMessageLog.open(ClickHouseConfig(url=url))
    try:
        rows = [
            MessageRow(
                conv=m.conv, seq=m.seq, msg_id=int(m.msg_id), sender=m.sender, cmid=m.cmid, kind=m.kind,
                body=msgspec.json.encode(m.body).decode(), ts=m.ts, version=1, state="", edited_at=0,
                reactions="", list_version=i + 1, reply_seq=0, target=0, row_version=1,
            )
            for i, m in enumerate(messages)
        ]  # fmt: skip
        await client.insert("INSERT INTO messages FORMAT JSONEachRow", b"\n".join(msgspec.json.encode(r) for r in rows))
        await client.query("OPTIMIZE TABLE messages FINAL")
        index = await ClickHouseSearchIndex.open(url)
        print(f"cluster (ClickHouse {(await client.query('SELECT version()')).decode().strip()}):")
        before = await _timed(index, queries, "hot only")
        await index.close()
        with tempfile.TemporaryDirectory() as tmp:
            objects = LocalObjectStore(LocalConfig(root=tmp))
            async with pg_catalog.exclusive(pg_url) as conn:
                report = await clickhouse_source.run(
                    ClickHouseSource(client), conn, objects, older_than_s=ARCHIVED_DAYS * 86400, grace_s=0
                )
            await client.query("OPTIMIZE TABLE search_archive FINAL")
            pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=2)
            catalog = PostgresCatalog(pool, 60.0)
            archive = ClusterArchivedLog(hot, catalog, ArchiveCache(objects), ClickHouseSource(client))
            index = await ClickHouseSearchIndex.open(url, archive=archive)
            print(f"  archived {report.rows} messages in {report.parts} parts")
            after = await _timed(index, queries, "archived")
            assert after == before, "archiving changed what search finds"
            await index.close()
            await catalog.close()
            await objects.close()
        sql = (
            "SELECT sum(bytes_on_disk) FROM system.parts"
            f" WHERE database = '{name}' AND table = 'search_archive' AND active FORMAT TSV"
        )
        size = int((await client.query(sql)).decode().strip() or 0)
        print(f"  search_archive (ClickHouse, merged): {size / report.rows:.1f} bytes/message")
    finally:
        await hot.close()
        await client.close()
        await admin.query(f"DROP DATABASE IF EXISTS {name}")
        await admin.close()
        await pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await pg.close()


async def main(n: int, convs: int, clickhouse: str, postgres: str) -> None:
    messages = _messages(n, convs)
    cutoff = int(time.time() * 1000) - ARCHIVED_DAYS * 86_400_000
    boundary = min(int(m.msg_id) for m in messages if m.ts >= cutoff)  # a cursor: the page before is archived
    await embedded(messages, boundary)
    if clickhouse != "-":
        await cluster(messages, boundary, clickhouse, postgres)


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            int(args[0]) if args else 100_000,
            int(args[1]) if len(args) > 1 else 100,
            args[2] if len(args) > 2 else "clickhouse://127.0.0.1:18123/default",
            args[3] if len(args) > 3 else "postgresql://postgres@127.0.0.1:5432/postgres",
        )
    )
