"""The ClickHouse message log as an archive source (a cluster): parts written as in the embedded archive
(archiver.py: format, manifest, upload, verify), recorded in PostgreSQL (pg_catalog.py), then removed.

A pass, holding the PostgreSQL advisory lock:

1. For each conversation with rows older than the cutoff: the rows after its last archived seq, up to the
   first one too new, in their latest version (as the log reads them: ``LIMIT 1 BY seq`` over row versions),
   cut per month, written, read back and checked; their searchable text written to ``search_archive`` (what
   search finds archived messages by, backends/search/clickhouse.py); then the part recorded with the
   largest ``list_version`` of every stored version of the part's rows (``max_list_version``).
2. ``archive_grace_s`` later (every reader re-reads the catalog within ``archive_refresh_s``, less than that),
   the recorded parts' rows are removed from ``messages``: one ``ALTER TABLE ... DELETE`` mutation for a
   batch of parts, ``WHERE conv = .. AND seq BETWEEN lo AND hi AND list_version <= max_list_version``. A change
   stored after the part was written (an edit or reaction of an archived message, made meanwhile) is a new
   row version with a larger ``list_version``: it stays, and wins over the archived row on every read.
   The pass waits for the mutation, checks the rows are gone, and marks the parts removed.

Why a mutation and not ``DROP PARTITION``: a month partition also receives new versions of its old rows
(an edit of a January message is written into January), so dropping a partition that was entirely archived
could lose a change made after the part was written. A mutation rewrites the partitions it touches, once per
batch of parts, in the background of the server.

A pass killed anywhere resumes on the next: a part uploaded but not recorded is found again (same key) and
verified; a part recorded but not removed is removed by the next pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import msgspec

from flare_im.archive import archiver, pg_catalog
from flare_im.archive.archiver import ArchiveError, RunReport
from flare_im.archive.format import Manifest
from flare_im.backends.clickhouse_client import ClickHouseClient, quote
from flare_im.backends.message_log.clickhouse import _fetch
from flare_im.backends.message_log.clickhouse_schema import MESSAGE_COLUMNS, MessageRow, codecs_supported, columns
from flare_im.backends.objects.base import ObjectStore
from flare_im.backends.search.clickhouse import ARCHIVE_TABLE, ArchivedText, archive_schema, archived_texts

Row = tuple[Any, ...]
CHUNK_ROWS = 20_000  # rows read from ClickHouse per query
DELETE_BATCH = 200  # parts per mutation (one clause each: far below max_query_size)
MUTATION_TIMEOUT_S = 600.0


class _Conv(msgspec.Struct):
    conv: str


class _Top(msgspec.Struct):
    top: int


class _Pending(msgspec.Struct):
    pending: int


def to_row(r: MessageRow) -> Row:
    """A ClickHouse row in the archive's column order (format.COLUMNS), as the SQLite log stores it: the
    same bytes whichever tier a message is read from."""
    return (
        r.conv,
        r.seq,
        r.msg_id,
        r.sender,
        r.cmid,
        r.kind,
        r.body.encode(),
        r.ts,
        r.version,
        r.state,
        r.edited_at,
        r.reactions.encode() if r.reactions else None,
        r.reply_seq or None,
        r.target or None,
    )


def from_row(row: Row) -> MessageRow:
    """An archived row as a row of ``messages`` again (rehydrated): list_version 0 and row_version 1, below
    every later version of it, which is what the next change of it writes."""
    return MessageRow(
        conv=row[0],
        seq=row[1],
        msg_id=row[2],
        sender=row[3],
        cmid=row[4],
        kind=row[5],
        body=bytes(row[6]).decode(),
        ts=row[7],
        version=row[8],
        state=row[9],
        edited_at=row[10],
        reactions=bytes(row[11]).decode() if row[11] else "",
        list_version=0,
        reply_seq=row[12] or 0,
        target=row[13] or 0,
        row_version=1,
    )


class ClickHouseSource:
    """The reads and deletes of one archive pass on the ``messages`` table, and the rehydration of readers."""

    def __init__(self, client: ClickHouseClient) -> None:
        self._client = client
        self._search_table = False  # search_archive created by this source

    async def index_for_search(self, rows: list[Row]) -> None:
        """Write the part's messages that have searchable text to ``search_archive`` (before the part is
        recorded: a pass killed after this writes them again, and the table keeps one row per message)."""
        if not self._search_table:
            version = (await self._client.query("SELECT version()")).decode().strip()
            await self._client.query(archive_schema(codecs=codecs_supported(version)))
            self._search_table = True
        texts = archived_texts(rows)
        if texts:
            data = b"\n".join(msgspec.json.encode(t) for t in texts)
            await self._client.insert(f"INSERT INTO {ARCHIVE_TABLE} ({columns(ArchivedText)}) FORMAT JSONEachRow", data)

    async def conversations(self, cutoff_ms: int) -> list[str]:
        sql = f"SELECT DISTINCT conv FROM messages WHERE ts < {int(cutoff_ms)} ORDER BY conv"
        return [c.conv for c in await _fetch(self._client, sql, _Conv)]

    async def parts(self, conv: str, after: int, cutoff_ms: int) -> AsyncIterator[list[Row]]:
        """``conv``'s rows after seq ``after`` up to the first one newer than the cutoff, latest versions, cut
        per month (archiver's rule); read in chunks, so at most a month of one conversation is held."""
        sql = (
            f"SELECT min(seq) AS top FROM messages WHERE conv = {quote(conv)} AND seq > {int(after)}"
            f" AND ts >= {int(cutoff_ms)}"
        )
        stop = (await _fetch(self._client, sql, _Top))[0].top or 2**63 - 1  # min() of nothing is 0
        carry: list[Row] = []
        while True:
            sql = (
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv = {quote(conv)} AND seq > {int(after)}"
                f" AND seq < {int(stop)} ORDER BY seq, row_version DESC LIMIT 1 BY seq LIMIT {CHUNK_ROWS}"
            )
            chunk = [to_row(r) for r in await _fetch(self._client, sql, MessageRow)]
            if not chunk:
                break
            after = chunk[-1][1]
            cut = list(archiver.cut_parts(iter(carry + chunk), cutoff_ms))
            carry = cut.pop()  # the last month may go on in the next chunk
            for part in cut:
                yield part
        if carry:
            yield carry

    async def max_list_version(self, m: Manifest) -> int:
        sql = (
            f"SELECT max(list_version) AS top FROM messages WHERE conv = {quote(m.conv)}"
            f" AND seq BETWEEN {m.lo} AND {m.hi}"
        )
        return (await _fetch(self._client, sql, _Top))[0].top

    async def remove(self, parts: Sequence[pg_catalog.CatalogPart]) -> None:
        """Delete the parts' rows (the versions they were written from), wait for it, check they are gone."""
        for i in range(0, len(parts), DELETE_BATCH):
            batch = parts[i : i + DELETE_BATCH]
            where = " OR ".join(_clause(p) for p in batch)
            await self._client.query(f"ALTER TABLE messages DELETE WHERE {where}")
            await self._wait_for_mutations()
            sql = f"SELECT count() AS top FROM messages WHERE {where}"
            left = (await _fetch(self._client, sql, _Top))[0].top
            if left:
                raise ArchiveError(f"{left} archived rows are still in ClickHouse after the delete")

    async def _wait_for_mutations(self) -> None:
        sql = (
            "SELECT count() AS pending FROM system.mutations WHERE database = currentDatabase()"
            " AND table = 'messages' AND is_done = 0"
        )
        deadline = time.monotonic() + MUTATION_TIMEOUT_S
        while (await _fetch(self._client, sql, _Pending))[0].pending:
            if time.monotonic() > deadline:
                raise ArchiveError(f"the delete mutation did not finish within {MUTATION_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)

    async def rehydrate(self, rows: list[Row]) -> None:
        """Copy archived rows back into ``messages`` where no version of them is stored (an operation on an
        archived message then applies to the copy, as on any row)."""
        conv = rows[0][0]
        seqs = ", ".join(str(int(r[1])) for r in rows)
        sql = f"SELECT DISTINCT seq AS top FROM messages WHERE conv = {quote(conv)} AND seq IN ({seqs})"
        stored = {t.top for t in await _fetch(self._client, sql, _Top)}
        missing = [from_row(r) for r in rows if r[1] not in stored]
        if missing:
            data = b"\n".join(msgspec.json.encode(r) for r in missing)
            await self._client.insert(f"INSERT INTO messages ({columns(MessageRow)}) FORMAT JSONEachRow", data)

    async def hot_rows(self) -> int:
        return (await _fetch(self._client, "SELECT count() AS top FROM messages", _Top))[0].top


def _clause(p: pg_catalog.CatalogPart) -> str:
    m = p.manifest
    return f"(conv = {quote(m.conv)} AND seq BETWEEN {m.lo} AND {m.hi} AND list_version <= {p.max_list_version})"


async def run(
    source: ClickHouseSource,
    conn: asyncpg.Connection,
    store: ObjectStore,
    *,
    older_than_s: float,
    grace_s: float,
    now: Callable[[], float] = time.time,
    progress: Callable[[Manifest], None] | None = None,
) -> RunReport:
    """One pass (``conn`` holds the lock: pg_catalog.exclusive)."""
    cutoff_ms = int((now() - older_than_s) * 1000)
    report = RunReport()
    known = await pg_catalog.parts(conn)
    archived: dict[str, int] = {}
    for p in known:
        archived[p.manifest.conv] = max(archived.get(p.manifest.conv, 0), p.manifest.hi)
    pending = [p for p in known if not p.removed]
    for conv in await source.conversations(cutoff_ms):
        async for rows in source.parts(conv, archived.get(conv, 0), cutoff_ms):
            m = await archiver.upload(store, rows, report)
            await source.index_for_search(rows)
            part = pg_catalog.CatalogPart(m, await source.max_list_version(m), removed=False)
            await pg_catalog.record(conn, m, part.max_list_version)
            pending.append(part)
            report.parts += 1
            report.rows += m.rows
            report.bytes += m.size
            if progress is not None:
                progress(m)
    if pending:
        await asyncio.sleep(grace_s)  # every reader learns of the parts before their rows go
        await source.remove(pending)
        await pg_catalog.mark_removed(conn, [p.manifest for p in pending])
    return report
