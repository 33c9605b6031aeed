"""The cold archive in a cluster: the ClickHouse message log as the hot tier, PostgreSQL as the catalog.

``open_reader``: what gateway nodes and the store worker read and write through (reader.py's
ArchivedMessageLog over ClickHouse). ``run_once``, ``status``, ``verify``: ``flare archive`` and ``flare
worker archive`` (worker.py) with cluster settings. docs/operations.md, "Storage tiers".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from flare_im.archive import archiver, clickhouse_source, pg_catalog
from flare_im.archive.archiver import RunReport
from flare_im.archive.clickhouse_source import ClickHouseSource
from flare_im.archive.format import Manifest
from flare_im.archive.pg_catalog import PostgresCatalog
from flare_im.archive.reader import ArchiveCache, ArchivedMessageLog
from flare_im.backends.clickhouse_client import connect
from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.message_log.clickhouse import ClickHouseMessageLog
from flare_im.backends.objects.base import ObjectStore, open_object_store
from flare_im.config import Settings

log = logging.getLogger("flare")
Closer = Callable[[], Awaitable[None]]


class ClusterArchivedLog(ArchivedMessageLog):
    """ArchivedMessageLog over ClickHouse, with what the admin statistics ask of the store."""

    def __init__(
        self, hot: ClickHouseMessageLog, catalog: PostgresCatalog, cache: ArchiveCache, source: ClickHouseSource
    ):
        super().__init__(hot, catalog, cache, source.rehydrate)
        self._clickhouse = hot

    async def active_conversations(self, since_ms: int) -> int:
        # Archived messages are older than any window the statistics ask about.
        return await self._clickhouse.active_conversations(since_ms)


def check(settings: Settings) -> None:
    """ValueError unless these settings can archive a cluster."""
    if not settings.database_url.startswith(("postgresql://", "postgres://")):
        raise ValueError("the cluster archive keeps its catalog in PostgreSQL: set database_url")
    if not settings.object_store_url:
        raise ValueError("the cluster archive needs object_store_url (a store every node reads: s3:// or shared)")


async def open_reader(settings: Settings, hot: ClickHouseMessageLog, closers: list[Closer]) -> MessageLog:
    """``hot`` (the ClickHouse log) read through the archive, whose catalog is re-read every
    ``archive_refresh_s``. ``hot`` itself on a cluster without PostgreSQL (nothing can be archived there)."""
    if not settings.database_url.startswith(("postgresql://", "postgres://")):
        return hot
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    catalog = PostgresCatalog(pool, settings.archive_refresh_s)
    try:
        await catalog.index()
    except BaseException:
        await pool.close()
        raise
    catalog.start()
    closers.append(catalog.close)
    store = await open_object_store(settings.object_store_url, str(Path(settings.data_dir) / "media"))
    closers.append(store.close)
    client = connect(settings.message_store_url)
    closers.append(client.close)
    return ClusterArchivedLog(hot, catalog, ArchiveCache(store), ClickHouseSource(client))


async def run_once(
    settings: Settings, older_than_s: float, progress: Callable[[Manifest], None] | None = None
) -> RunReport:
    """One archive pass over the cluster's message store (pg_catalog.ArchiveBusy if another one runs)."""
    check(settings)
    client = connect(settings.message_store_url)
    store = await open_object_store(settings.object_store_url, "")
    try:
        async with pg_catalog.exclusive(settings.database_url) as conn:
            return await clickhouse_source.run(
                ClickHouseSource(client),
                conn,
                store,
                older_than_s=older_than_s,
                grace_s=settings.archive_grace_s,
                progress=progress,
            )
    finally:
        await store.close()
        await client.close()


async def status(settings: Settings) -> tuple[int, list[pg_catalog.CatalogPart]]:
    """Rows in ClickHouse's ``messages`` (every version), and the recorded parts."""
    check(settings)
    client = connect(settings.message_store_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await ClickHouseSource(client).hot_rows(), await pg_catalog.parts(conn)
    finally:
        await conn.close()
        await client.close()


async def verify(settings: Settings) -> tuple[int, list[tuple[Manifest, str]]]:
    """How many parts are recorded, and those whose file or manifest does not match the catalog."""
    check(settings)
    conn = await asyncpg.connect(settings.database_url)
    store: ObjectStore = await open_object_store(settings.object_store_url, "")
    try:
        parts = [p.manifest for p in await pg_catalog.parts(conn)]
        return len(parts), await archiver.verify_all(store, parts)
    finally:
        await store.close()
        await conn.close()
