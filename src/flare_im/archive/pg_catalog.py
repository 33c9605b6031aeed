"""The catalog of archived parts in a cluster: a table in PostgreSQL, the cluster's relational store.

Why PostgreSQL, not the manifests in the object store or a ClickHouse table: every node already reaches it,
a part's row and its removal mark are transactional (ClickHouse has no transactions, and listing an object
store prefix on every refresh costs a LIST per thousand parts), and its advisory locks keep two archive
workers apart without another engine. Gateways read only the rows added since their last read (``id``
grows; parts are never deleted), so a refresh is one indexed query.

The table is created by the archive worker (``CREATE TABLE IF NOT EXISTS``), not by ``flare migrate``: it is
the archive's own, and a cluster that never archives never has it; readers treat its absence as no parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from flare_im.archive.format import Manifest
from flare_im.archive.reader import PartIndex

log = logging.getLogger("flare")

TABLE = """CREATE TABLE IF NOT EXISTS archive_parts (
    id BIGSERIAL PRIMARY KEY, conv TEXT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL, month TEXT NOT NULL,
    key TEXT NOT NULL, rows BIGINT NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL,
    max_list_version BIGINT NOT NULL, archived_at BIGINT NOT NULL, removed_at BIGINT NOT NULL DEFAULT 0,
    UNIQUE (conv, lo))"""
_COLUMNS = "conv, month, lo, hi, rows, size, sha256, key"
LOCK_KEY = zlib.crc32(b"flare archive worker")  # the advisory lock one archive pass holds


@dataclass(frozen=True, slots=True)
class CatalogPart:
    manifest: Manifest
    max_list_version: int  # the largest list_version of the part's rows in ClickHouse when it was written
    removed: bool  # its rows are gone from ClickHouse


class ArchiveBusy(Exception):
    """Another archive pass holds the lock."""


def _manifest(r: asyncpg.Record) -> Manifest:
    return Manifest(
        conv=r["conv"],
        month=r["month"],
        lo=r["lo"],
        hi=r["hi"],
        rows=r["rows"],
        size=r["size"],
        sha256=r["sha256"],
        key=r["key"],
    )


async def exists(conn: asyncpg.Connection | asyncpg.Pool) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('archive_parts') IS NOT NULL"))


async def parts(conn: asyncpg.Connection | asyncpg.Pool) -> list[CatalogPart]:
    if not await exists(conn):
        return []
    rows = await conn.fetch(f"SELECT {_COLUMNS}, max_list_version, removed_at FROM archive_parts ORDER BY conv, lo")
    return [CatalogPart(_manifest(r), r["max_list_version"], r["removed_at"] > 0) for r in rows]


async def record(conn: asyncpg.Connection, m: Manifest, max_list_version: int) -> None:
    await conn.execute(
        f"INSERT INTO archive_parts ({_COLUMNS}, max_list_version, archived_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        m.conv,
        m.month,
        m.lo,
        m.hi,
        m.rows,
        m.size,
        m.sha256,
        m.key,
        max_list_version,
        int(time.time() * 1000),
    )


async def mark_removed(conn: asyncpg.Connection, removed: list[Manifest]) -> None:
    await conn.executemany(
        "UPDATE archive_parts SET removed_at = $3 WHERE conv = $1 AND lo = $2",
        [(m.conv, m.lo, int(time.time() * 1000)) for m in removed],
    )


@contextlib.asynccontextmanager
async def exclusive(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding the archive's advisory lock (session level: released when it closes, also when
    the worker dies); ArchiveBusy at once if another pass holds it. The catalog table exists inside."""
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            raise ArchiveBusy("another archive pass is running (PostgreSQL advisory lock held)")
        await conn.execute(TABLE)
        yield conn
    finally:
        await conn.close()


class PostgresCatalog:
    """The parts as a reader sees them: re-read every ``refresh_s`` in the background, and before a read
    whenever the last successful read is older than that (so a read never uses an index more than
    ``refresh_s`` plus one query old). The archive worker waits ``archive_grace_s`` (longer) between
    recording a part and removing its rows from ClickHouse, so every reader knows a part before its rows go."""

    def __init__(self, pool: asyncpg.Pool, refresh_s: float) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._manifests: list[Manifest] = []
        self._index = PartIndex()
        self._last_id = 0
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def cached(self) -> PartIndex | None:
        return self._index if time.monotonic() - self._read_at < self._refresh_s else None

    async def index(self) -> PartIndex:
        async with self._lock:  # one query for every read waiting on a stale index
            if self.cached() is None:
                await self._read()
            return self._index

    async def _read(self) -> None:
        started = time.monotonic()
        if await exists(self._pool):
            rows = await self._pool.fetch(
                f"SELECT id, {_COLUMNS} FROM archive_parts WHERE id > $1 ORDER BY id", self._last_id
            )
            if rows:
                self._manifests += [_manifest(r) for r in rows]
                self._last_id = rows[-1]["id"]
                self._index = PartIndex(self._manifests)
        self._read_at = started

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop(), name="flare-archive-catalog")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s / 2)
            try:
                async with self._lock:
                    await self._read()
            except (OSError, asyncpg.PostgresError) as exc:  # reads then refresh themselves (or fail)
                log.warning("archive catalog refresh failed: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pool.close()
