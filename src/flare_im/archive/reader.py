"""The message log seen through both tiers: hot rows in the message store, archived ones in the object store.

The hot store is SQLite on one node (``open_archived``) or ClickHouse in a cluster (archive/cluster.py); the
catalog of archived parts is a table beside the SQLite log, or one in PostgreSQL that every node re-reads.
Archived seqs of a conversation are a prefix (``seq <= hi``, see archiver.py), so a read whose range lies
above it goes straight to the hot store: the hot path pays one dict lookup. Below it, the page is merged from
both tiers, a hot row winning over an archived one with the same seq: an operation on an archived message
(edit, recall, reaction) first copies its target back into the hot store (``rehydrate``) and applies there
as usual, and from then on that hot copy is the message's current state. Decoded row groups are kept in a
small LRU.
"""

from __future__ import annotations

import asyncio
import bisect
import sqlite3
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from flare_im.archive import format as fmt
from flare_im.archive.format import Manifest
from flare_im.backends.message_log.base import Change, ConvHead, MessageLog, Revision
from flare_im.backends.message_log.sqlite import SqliteMessageLog, message_of_row
from flare_im.backends.objects.base import ObjectStore, open_object_store, read_all
from flare_im.backends.sqlite_db import SqliteDatabase
from flare_im.config import Settings
from flare_im.protocol.frames import Message

Row = tuple[Any, ...]
Rehydrate = Callable[[list[Row]], Awaitable[None]]  # copies archived rows back into the hot store
_PART_COLUMNS = "conv, month, lo, hi, rows, size, sha256, key"


def load_catalog(db: SqliteDatabase) -> list[Manifest]:
    """The recorded parts, [] when nothing was ever archived (no table)."""
    conn = db.reader
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'archive_parts'").fetchone() is None:
        return []
    rows = conn.execute(f"SELECT {_PART_COLUMNS} FROM archive_parts ORDER BY conv, lo").fetchall()
    return [
        Manifest(conv=r[0], month=r[1], lo=r[2], hi=r[3], rows=r[4], size=r[5], sha256=r[6], key=r[7]) for r in rows
    ]


class PartIndex:
    """The archived parts by conversation, ascending by seq."""

    def __init__(self, parts: Iterable[Manifest] = ()) -> None:
        self.parts: dict[str, list[Manifest]] = {}
        for p in sorted(parts, key=lambda p: (p.conv, p.lo)):
            self.parts.setdefault(p.conv, []).append(p)
        self.his = {conv: ps[-1].hi for conv, ps in self.parts.items()}
        self.los = {conv: [p.lo for p in ps] for conv, ps in self.parts.items()}

    def hi(self, conv: str) -> int:
        """The last archived seq of ``conv`` (0: none)."""
        return self.his.get(conv, 0)


class Catalog(Protocol):
    def cached(self) -> PartIndex | None:
        """The index if it is current enough to use without waiting, else None (then ``index``)."""
        ...

    async def index(self) -> PartIndex:
        """The current index (re-read first if the cached one is too old)."""
        ...


class StaticCatalog:
    """Parts known when the process started (embedded: nothing archives beside a running server)."""

    def __init__(self, parts: Iterable[Manifest]) -> None:
        self._index = PartIndex(parts)

    def cached(self) -> PartIndex:
        return self._index

    async def index(self) -> PartIndex:
        return self._index


class ArchiveCache:
    """Parts' row groups, decoded, least recently used first out; a part's file is fetched once per miss."""

    def __init__(self, store: ObjectStore, max_groups: int = 256) -> None:
        self._store = store
        self._max = max_groups
        self._groups: OrderedDict[tuple[str, int], tuple[list[int], list[Row]]] = OrderedDict()
        self._ranges: dict[str, list[tuple[int, int]]] = {}
        self.fetches = 0  # files read from the object store (tests, metrics)

    async def rows(self, part: Manifest, after: int, before: int, limit: int, newest: bool) -> list[Row]:
        """The part's rows with ``after < seq < before``, ascending: the ``limit`` newest if ``newest``, else
        the oldest. Only the row groups that hold them are decoded."""
        ranges = self._ranges.get(part.key)
        file = None
        if ranges is None:
            file = await self._fetch(part)
            ranges = self._ranges[part.key] = fmt.group_ranges(file)
        chunks: list[list[Row]] = []
        found = 0
        order = range(len(ranges) - 1, -1, -1) if newest else range(len(ranges))
        for i in order:
            lo, hi = ranges[i]
            if hi <= after or lo >= before:
                continue
            group = self._groups.get((part.key, i))
            if group is None:
                file = file or await self._fetch(part)
                decoded = fmt.decode_group(file, i)
                group = self._groups[(part.key, i)] = ([r[1] for r in decoded], decoded)
                while len(self._groups) > self._max:
                    self._groups.popitem(last=False)
            else:
                self._groups.move_to_end((part.key, i))
            seqs, rows = group
            chosen = rows[bisect.bisect_right(seqs, after) : bisect.bisect_left(seqs, before)]
            chosen = chosen[-(limit - found) :] if newest else chosen[: limit - found]
            chunks.append(chosen)
            found += len(chosen)
            if found >= limit:
                break
        if newest:
            chunks.reverse()
        return [r for chunk in chunks for r in chunk]

    async def all_rows(self, part: Manifest) -> list[Row]:
        """Every row of the part, decoded from one fetch and not kept (a search index reads a part once)."""
        file = await self._fetch(part)
        return [r for i in range(file.num_row_groups) for r in fmt.decode_group(file, i)]

    async def references(self, part: Manifest, target: int) -> list[Row]:
        """The part's rows that refer to message ``target``: replies quoting it and edit events of it (what a
        recall must strip). Row groups whose reply_seq and target statistics exclude it are not decoded."""
        file = await self._fetch(part)
        out: list[Row] = []
        for i in range(file.num_row_groups):
            if fmt.may_refer(file, i, target):
                out += [r for r in fmt.decode_group(file, i) if r[12] == target or (r[13] == target and r[5] == "edit")]
        return out

    async def _fetch(self, part: Manifest) -> Any:
        data = await read_all(self._store, part.key)
        self.fetches += 1
        if fmt.sha256(data) != part.sha256:  # never serve a corrupted file as history
            raise RuntimeError(f"archive part {part.key} fails its checksum (flare archive verify)")
        return fmt.open_file(data)


class ArchivedMessageLog:
    """A MessageLog (base.py): a hot MessageLog plus the archived parts its catalog records."""

    def __init__(self, hot: MessageLog, catalog: Catalog, cache: ArchiveCache, rehydrate: Rehydrate) -> None:
        self._hot = hot
        self._catalog = catalog
        self._cache = cache
        self._rehydrate = rehydrate
        self._applying = asyncio.Lock()

    @classmethod
    def on_sqlite(
        cls, hot: SqliteMessageLog, db: SqliteDatabase, parts: list[Manifest], cache: ArchiveCache
    ) -> ArchivedMessageLog:
        """The embedded log: parts recorded in ``db`` (read once: nothing archives beside a running server)."""

        async def rehydrate(rows: list[Row]) -> None:
            await db.write(lambda conn: _rehydrate(conn, rows))

        return cls(hot, StaticCatalog(parts), cache, rehydrate)

    async def _index(self) -> PartIndex:
        return self._catalog.cached() or await self._catalog.index()

    async def _archived(self, conv: str, after: int, before: int, limit: int, newest: bool) -> list[Row]:
        """Archived rows of ``conv`` with ``after < seq < before``, ascending, at most ``limit`` (the newest
        or the oldest): the parts are read from the end the page starts at."""
        index = await self._index()
        parts = index.parts.get(conv, [])
        if not parts or limit <= 0:
            return []
        los = index.los[conv]
        first = max(bisect.bisect_right(los, after + 1) - 1, 0)
        last = bisect.bisect_left(los, before)  # parts[first:last] may hold rows of the range
        chosen = [p for p in parts[first:last] if p.hi > after]
        chunks: list[list[Row]] = []
        found = 0
        for part in reversed(chosen) if newest else chosen:
            rows = await self._cache.rows(part, after, before, limit - found, newest)
            chunks.append(rows)
            found += len(rows)
            if found >= limit:
                break
        if newest:
            chunks.reverse()
        return [r for chunk in chunks for r in chunk]

    def append(self, message: Message, version: int) -> Awaitable[None]:
        return self._hot.append(message, version)

    def apply(self, event: Message, change: Change, version: int) -> Awaitable[None]:
        index = self._catalog.cached()
        if index is not None and change.target > index.hi(event.conv):
            return self._hot.apply(event, change, version)  # queued now, in call order with appends
        return self._apply_archived(event, change, version)

    async def _apply_archived(self, event: Message, change: Change, version: int) -> None:
        # One at a time, in call order (asyncio.Lock wakes waiters first come first served): two operations
        # on one archived message in a batch the store worker gathers must apply in their order.
        async with self._applying:
            await self._apply_locked(event, change, version)

    async def _apply_locked(self, event: Message, change: Change, version: int) -> None:
        index = await self._index()
        if change.target > index.hi(event.conv):
            await self._hot.apply(event, change, version)
            return
        rows = await self._archived(event.conv, change.target - 1, change.target + 1, 1, False)
        if rows and change.state:
            # A recall strips the target's text from replies and edit events too (the hot log's apply does
            # it for its rows): bring the archived ones back first. They come after the target.
            for part in index.parts[event.conv]:
                if part.hi > change.target:
                    rows += await self._cache.references(part, change.target)
        if rows:  # a hot copy already there (an earlier operation) is the current state: keep it
            await self._rehydrate(rows)
        await self._hot.apply(event, change, version)

    async def get(self, conv: str, seqs: Sequence[int]) -> list[Message]:
        hot = await self._hot.get(conv, seqs)
        hi = (await self._index()).hi(conv)
        wanted = {s for s in seqs if s <= hi} - {m.seq for m in hot}
        if not wanted:
            return hot
        merged = {m.seq: m for m in hot}
        merged.update((m.seq, m) for m in await self.archived(conv, sorted(wanted)))
        return [merged[s] for s in sorted(merged)]

    async def archived(self, conv: str, seqs: Sequence[int]) -> list[Message]:
        """The archived rows among ``seqs`` as they were archived, whatever the hot store holds."""
        out = []
        for seq in seqs:
            out += [message_of_row(r[:12]) for r in await self._archived(conv, seq - 1, seq + 1, 1, False)]
        return out

    async def revisions(self, conv: str, seq: int) -> list[Revision]:
        return await self._hot.revisions(conv, seq)  # revisions are not archived

    async def part_keys(self) -> list[str]:
        """The keys of the recorded parts (what a search index reads once, backends/search/sqlite.py)."""
        return [p.key for parts in (await self._index()).parts.values() for p in parts]

    async def part_rows(self, key: str) -> list[Row]:
        conv = bytes.fromhex(key.split("/")[1]).decode()  # format.part_key
        [part] = [p for p in (await self._index()).parts.get(conv, []) if p.key == key]
        return await self._cache.all_rows(part)

    async def max_seq(self, conv: str) -> int:
        return await self._hot.max_seq(conv)

    async def heads(self, convs: Sequence[str]) -> dict[str, ConvHead]:
        heads = await self._hot.heads(convs)
        index = await self._index()
        for conv, head in heads.items():
            if head.last is None and head.max_seq <= index.hi(conv):
                found = await self.get(conv, [head.max_seq])
                if found:
                    heads[conv] = ConvHead(conv=conv, max_seq=head.max_seq, version=head.version, last=found[0])
        return heads

    async def range(self, conv: str, *, after: int, before: int, limit: int, newest: bool) -> list[Message]:
        hot = await self._hot.range(conv, after=after, before=before, limit=limit, newest=newest)
        hi = (await self._index()).hi(conv)
        if after >= hi or limit <= 0:
            return hot
        if newest and len(hot) == limit and hot[0].seq > hi:
            return hot  # the page is all above the archive
        cold = await self._archived(conv, after, min(before, hi + 1), limit, newest)
        page = {r[1]: message_of_row(r[:12]) for r in cold}
        page.update((m.seq, m) for m in hot)
        seqs = sorted(page)
        return [page[s] for s in (seqs[-limit:] if newest else seqs[:limit])]

    async def find_by_client_id(self, sender: str, cmid: str, *, since_ms: int) -> Message | None:
        return await self._hot.find_by_client_id(sender, cmid, since_ms=since_ms)

    async def recent_client_ids(self, since_ms: int, limit: int) -> list[tuple[str, str]]:
        return await self._hot.recent_client_ids(since_ms, limit)

    async def max_version(self) -> int:
        return await self._hot.max_version()


def _rehydrate(conn: sqlite3.Connection, rows: list[Row]) -> None:
    marks = ",".join("?" * len(rows[0]))
    conn.executemany(f"INSERT OR IGNORE INTO messages ({fmt.COLUMNS}) VALUES ({marks})", rows)


async def open_archived(
    hot: SqliteMessageLog, db: SqliteDatabase, settings: Settings, closers: list[Callable[[], Awaitable[None]]]
) -> SqliteMessageLog | ArchivedMessageLog:
    """``hot`` itself when nothing is archived (reads and sends then pay nothing), else both tiers."""
    parts = load_catalog(db)
    if not parts:
        return hot
    store = await open_object_store(settings.object_store_url, str(Path(settings.data_dir) / "media"))
    closers.append(store.close)
    return ArchivedMessageLog.on_sqlite(hot, db, parts, ArchiveCache(store))
