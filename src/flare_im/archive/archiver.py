"""Moves old rows of the embedded (SQLite) message log to the object store, per conversation and month.

For each conversation, the rows after its last archived seq are read in seq order up to the first one newer
than the cutoff (so what is archived is always a prefix of the conversation: reads know an archived seq by
``seq <= hi``), and cut into parts where the month of their ts changes. Each part is written as Parquet with a
manifest, read back and checked (row count, seq range, sha256), and only then, in one SQLite transaction, its
rows are deleted and the part recorded in ``archive_parts``. A crash before that transaction leaves the rows
and maybe the objects: a rerun finds the same part (same key), verifies what is there and finishes, or
writes it again. Nothing else writes the log meanwhile: run it with the server stopped.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flare_im.archive import format as fmt
from flare_im.archive.format import Manifest
from flare_im.backends.objects.base import ObjectNotFound, ObjectStore, one_chunk, read_all

CATALOG = """CREATE TABLE IF NOT EXISTS archive_parts (
        conv TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, month TEXT NOT NULL, key TEXT NOT NULL,
        rows INTEGER NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, archived_at INTEGER NOT NULL,
        PRIMARY KEY (conv, lo)) WITHOUT ROWID"""
_PART_COLUMNS = "conv, month, lo, hi, rows, size, sha256, key"


class ArchiveError(Exception):
    """A part read back does not match what was written (or its manifest)."""


@dataclass
class RunReport:
    parts: int = 0
    rows: int = 0
    bytes: int = 0
    resumed: int = 0  # parts found already uploaded and verified by an interrupted run


def month_of(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m")


def open_catalog(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(CATALOG)
    return conn


def cut_parts(rows: Iterator[tuple[Any, ...]], cutoff_ms: int) -> Iterator[list[tuple[Any, ...]]]:
    """Consecutive rows (by seq) older than the cutoff, cut where the month changes; stops at the first newer."""
    part: list[tuple[Any, ...]] = []
    month = ""
    for row in rows:
        if row[7] >= cutoff_ms:
            break
        m = month_of(row[7])
        if part and m != month:
            yield part
            part = []
        month = m
        part.append(row)
    if part:
        yield part


async def verify_part(store: ObjectStore, m: Manifest) -> list[tuple[Any, ...]]:
    """The part's rows, after checking its file against ``m``: sha256, size, row count, seq range."""
    try:
        data = await read_all(store, m.key)
    except ObjectNotFound as exc:
        raise ArchiveError(f"{m.key}: missing") from exc
    if fmt.sha256(data) != m.sha256 or len(data) != m.size:
        raise ArchiveError(f"{m.key}: checksum mismatch ({len(data)} bytes)")
    try:
        rows = fmt.decode(data)
    except Exception as exc:  # any decoding failure of a file that passed the checksum is corruption too
        raise ArchiveError(f"{m.key}: unreadable: {exc}") from exc
    if len(rows) != m.rows or rows[0][1] != m.lo or rows[-1][1] != m.hi or any(r[0] != m.conv for r in rows):
        raise ArchiveError(f"{m.key}: rows do not match the manifest")
    return rows


async def upload(store: ObjectStore, rows: list[tuple[Any, ...]], report: RunReport) -> Manifest:
    conv, lo, hi = rows[0][0], rows[0][1], rows[-1][1]
    key = fmt.part_key(conv, month_of(rows[0][7]), lo, hi)
    try:  # an interrupted run may have left this very part: keep it if it holds exactly these rows
        old = Manifest.decode(await read_all(store, fmt.manifest_key(key)))
        if old.key == key and await verify_part(store, old) == rows:
            report.resumed += 1
            return old
    except (ObjectNotFound, ArchiveError, ValueError, TypeError, KeyError):
        pass
    data = fmt.encode(rows)
    m = Manifest(conv, month_of(rows[0][7]), lo, hi, len(rows), len(data), fmt.sha256(data), key)
    await store.put(key, one_chunk(data), content_type="application/vnd.apache.parquet")
    await store.put(fmt.manifest_key(key), one_chunk(m.encode()), content_type="application/json")
    if await verify_part(store, m) != rows:
        raise ArchiveError(f"{key}: rows read back differ from the rows written")
    return m


def _commit(conn: sqlite3.Connection, m: Manifest, now_ms: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            f"INSERT INTO archive_parts ({_PART_COLUMNS}, archived_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (m.conv, m.month, m.lo, m.hi, m.rows, m.size, m.sha256, m.key, now_ms),
        )
        deleted = conn.execute("DELETE FROM messages WHERE conv = ? AND seq BETWEEN ? AND ?", (m.conv, m.lo, m.hi))
        if deleted.rowcount != m.rows:
            raise ArchiveError(f"{m.key}: {deleted.rowcount} rows to delete, the part has {m.rows}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


async def run(
    conn: sqlite3.Connection,
    store: ObjectStore,
    *,
    older_than_s: float,
    now: Callable[[], float] = time.time,
    progress: Callable[[Manifest], None] | None = None,
) -> RunReport:
    cutoff_ms = int((now() - older_than_s) * 1000)
    report = RunReport()
    archived = dict(conn.execute("SELECT conv, max(hi) FROM archive_parts GROUP BY conv").fetchall())
    convs = [r[0] for r in conn.execute("SELECT conv FROM conv_heads ORDER BY conv").fetchall()]
    for conv in convs:
        cursor = conn.execute(
            f"SELECT {fmt.COLUMNS} FROM messages WHERE conv = ? AND seq > ? ORDER BY seq",
            (conv, archived.get(conv, 0)),
        )
        # The cursor is drained per part before the deleting transaction (a part is one month of one conversation).
        for rows in cut_parts(iter(cursor.fetchall()), cutoff_ms):
            m = await upload(store, rows, report)
            _commit(conn, m, int(now() * 1000))
            report.parts += 1
            report.rows += m.rows
            report.bytes += m.size
            if progress is not None:
                progress(m)
    return report


def catalog(conn: sqlite3.Connection) -> list[Manifest]:
    rows = conn.execute(f"SELECT {_PART_COLUMNS} FROM archive_parts ORDER BY conv, lo").fetchall()
    return [
        Manifest(conv=r[0], month=r[1], lo=r[2], hi=r[3], rows=r[4], size=r[5], sha256=r[6], key=r[7]) for r in rows
    ]


async def verify(conn: sqlite3.Connection, store: ObjectStore) -> list[tuple[Manifest, str]]:
    """Every recorded part checked against the catalog and its manifest: the failures (part, reason)."""
    return await verify_all(store, catalog(conn))


async def verify_all(store: ObjectStore, parts: list[Manifest]) -> list[tuple[Manifest, str]]:
    """Each of ``parts`` (as a catalog records it) checked against its file and manifest: the failures."""
    failures = []
    for m in parts:
        try:
            await verify_part(store, m)
            if Manifest.decode(await read_all(store, fmt.manifest_key(m.key))) != m:
                raise ArchiveError(f"{m.key}: its manifest differs from the catalog")
        except ArchiveError as exc:
            failures.append((m, str(exc)))
        except (ObjectNotFound, ValueError, TypeError) as exc:
            failures.append((m, f"{fmt.manifest_key(m.key)}: bad manifest: {exc}"))
    return failures
