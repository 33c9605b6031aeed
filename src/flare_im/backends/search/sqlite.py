"""Search on SQLite (embedded): an FTS5 trigram index in its own database file, fed by a follower.

Why a follower and its own file: an FTS5 insert costs tens of microseconds and, committed in the small
transactions of the send path's group commit, several times that (each commit writes a new segment that is
merged later). Kept by triggers in the message store's transaction it cut the socket-less 1:1 send path to a
third (docs/performance.md). Here the send path only hands over each event's ``msg_id`` (``written``, through
``feed.FeedingLog``); every ``interval_s`` the follower reads those rows from the store once they are
committed, in their current state, and writes the index in one large transaction on the search database's
own writer thread (its own file: no lock shared with the message store's writer). An operation event
(edit, recall, delete) makes its target be read and indexed again: new text in, old text out; no text (a
recall) removes it.

What a reader sees: permissions and state come from the store at query time (a recalled message is never
found, not even before the follower saw the recall), and each candidate is checked against its current
text, so an edit's old text is never found. New text becomes findable once the follower indexed it:
``interval_s`` plus one batch, more under a load the index cannot follow (it lags, the send path does not).

Crashes: ``search_state.indexed_through`` is the largest ``msg_id`` the follower has indexed, committed with
the index. At start the follower reads every row of the store from ``CATCH_UP_MARGIN_MS`` before it (rows
commit slightly out of id order), so what a crash lost is indexed again; a new index file indexes the whole
store this way, in the background (search finds more as it goes).

The index: ``search_docs`` (msg_id -> indexed text) and a contentless FTS5 table over two columns, both
trigram-tokenized with Unicode case folding:

- ``text``: a term of three or more characters is looked up as every one of its trigrams, found anywhere,
  with or without spaces (Chinese, Japanese). The index keeps no positions (``detail = column``), so this
  finds a superset: each candidate is checked against its text, as always.
- ``grams``: the Chinese, Japanese and Korean characters of the text, every one written three times
  (``北京 ok`` -> ``北北北京京京``, other characters as spaces). Its trigrams are ``xxx`` per character and
  ``xxy`` per pair of neighbours, so a CJK term of one character ``x`` is the token ``xxx`` and one of two
  characters ``xy`` is ``xxy``: two-character words are index lookups, not scans.

Archived messages (``attach_archive``): ``flare archive run`` deletes rows from the store, not from this
index. When it starts, the follower reads each archived part it has not read yet (``search_parts``) once:
its messages are indexed if missing (an index made after the run) and located in ``search_archived``
(msg_id -> conv, seq), except those the store holds a copy of (an operation on an archived message brings
it back; the copy is indexed like any row, and leaves ``search_archived``). A search looks up the same
index for both tiers and reads archived candidates through the archive reader (archived.py).

A query whose terms are all short and not CJK (``ok``) has nothing to look up: the reader's conversations
are scanned newest first (the body matched with LIKE first) until the page is full; its cost grows with
how rare the term is (docs/performance.md). Every candidate is checked in Python (``base.matches``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from flare_im.backends.message_log.sqlite import COLUMNS, message_of_row
from flare_im.backends.search.archived import hydrate
from flare_im.backends.search.base import (
    UNSEARCHED_KINDS,
    ArchivedMessages,
    SearchHit,
    SearchQuery,
    fold,
    matches,
    searchable_text,
)
from flare_im.backends.sqlite_db import MultiRow, SqliteDatabase
from flare_im.ids import snowflake_floor, snowflake_ms
from flare_im.protocol.values import decode_stored_body

log = logging.getLogger(__name__)

MIN_TRIGRAM = 3
# FTS5 keeps its index in blobs of about 1,000 bytes (its pgsz): on the store's 1 KiB pages each would spill into an
# overflow page, so the index's own file keeps SQLite's default.
INDEX_PAGE_SIZE = 4096
CATCH_UP_MARGIN_MS = 60_000
RETRY_S = 10.0  # an id whose row is not in the store this long after it was handed over is dropped (not stored)
_CHUNK = 5000  # ids per follower batch and per catch-up read
_COMPACT_FROM = 4 * _CHUNK  # a pending map that held more is rebuilt once it has emptied
_IN_CHUNK = 500  # values per IN list
_MIN_BATCH = 50
_MAX_ID = 2**63 - 1
_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
_NOT_CJK = re.compile(f"[^{_CJK_RANGES}]")
_CJK = re.compile(f"[{_CJK_RANGES}]")
_encode = msgspec.json.Encoder().encode


def grams(text: str) -> str:
    """The ``grams`` column: CJK characters three times each, other characters as spaces ('' if none)."""
    if not _CJK.search(text):  # most text: one scan instead of a substitution per character (a third of indexing)
        return ""
    return "".join(c * 3 for c in _NOT_CJK.sub(" ", text))


def is_cjk(term: str) -> bool:
    return not _NOT_CJK.search(term)


_SEARCHED = f"kind NOT IN ({', '.join(repr(k) for k in UNSEARCHED_KINDS)})"

# ``detail = column``: the index keeps which column holds a trigram, not where. Positions made a repeated
# trigram (a text like "xxxx…", or a bot's same message) cost a varint each, and FTS5 merges one term's
# whole doclist in one step: with positions, one busy term made merges of seconds on the follower's
# thread. A term is looked up as all its trigrams (a superset, checked against the text as before).
FTS_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5("
    "text, grams, content = '', tokenize = 'trigram case_sensitive 0', detail = column)"
)
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS search_docs (msg_id INTEGER PRIMARY KEY, text TEXT NOT NULL)",
    FTS_TABLE,
    "CREATE TABLE IF NOT EXISTS search_state (id INTEGER PRIMARY KEY CHECK (id = 1), indexed_through INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO search_state (id, indexed_through) VALUES (1, 0)",
    # A contentless table must be told what it indexed to remove it: search_docs keeps that.
    "CREATE TRIGGER IF NOT EXISTS search_docs_insert AFTER INSERT ON search_docs BEGIN"
    " INSERT INTO search_fts (rowid, text, grams) VALUES (new.msg_id, new.text, flare_grams(new.text)); END",
    "CREATE TRIGGER IF NOT EXISTS search_docs_delete AFTER DELETE ON search_docs BEGIN"
    " INSERT INTO search_fts (search_fts, rowid, text, grams)"
    " VALUES ('delete', old.msg_id, old.text, flare_grams(old.text)); END",
    "CREATE TRIGGER IF NOT EXISTS search_docs_update AFTER UPDATE OF text ON search_docs BEGIN"
    " INSERT INTO search_fts (search_fts, rowid, text, grams)"
    " VALUES ('delete', old.msg_id, old.text, flare_grams(old.text));"
    " INSERT INTO search_fts (rowid, text, grams) VALUES (new.msg_id, new.text, flare_grams(new.text)); END",
    # Archived messages (no row in the store): where the archive reader finds them. Parts read into the index.
    "CREATE TABLE IF NOT EXISTS search_archived (msg_id INTEGER PRIMARY KEY, conv TEXT NOT NULL, seq INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS search_archived_conv ON search_archived (conv, msg_id)",
    "CREATE TABLE IF NOT EXISTS search_parts (key TEXT PRIMARY KEY) WITHOUT ROWID",
)
# A follower batch holds thousands of rows: one statement run per chunk of them, not per row (see MultiRow).
_UPSERT = MultiRow(
    "INSERT INTO search_docs (msg_id, text) VALUES ",
    2,
    " ON CONFLICT (msg_id) DO UPDATE SET text = excluded.text WHERE text != excluded.text",
)
_COLUMNS = ", ".join("m." + c.strip() for c in COLUMNS.split(","))  # the store's, read by message_of_row


class SqliteSearchIndex:
    """The SearchIndex port on SQLite: the index in ``db`` (its own file), over the message store ``store``.

    Build it before ``db.start()`` (it creates its tables on the writer connection), then ``start()`` the
    follower inside the running loop; give ``written`` to the message log (``feed.FeedingLog``)."""

    def __init__(
        self, db: SqliteDatabase, store: SqliteDatabase, *, interval_s: float = 0.5, duty: float = 0.25
    ) -> None:
        """``interval_s``: how often the follower indexes what was written; ``duty``: the share of a core it
        may spend indexing (0 < duty <= 1)."""
        if not 0 < duty <= 1:
            raise ValueError("duty must be in (0, 1]")
        if store.config.path == ":memory:" or store is db:
            raise ValueError("the search index needs its own database file and a message store in a file")
        self._db = db
        db.derived()  # rebuilt from the store after a loss (the catch-up): no fsync per index commit
        self._interval_s = interval_s
        self._duty = duty
        self._busy_s = 0.0  # CPU seconds the last batch took
        db.create_function("flare_grams", 1, grams)
        db.reader.create_function("flare_contains", 2, _contains, deterministic=True)
        _drop_other_format(db)
        db.migrate(SCHEMA)
        db.reader.execute("ATTACH DATABASE ? AS store", (store.config.path,))
        # The store as the follower reads it: its own connection, used only on this database's writer thread.
        self._reader = sqlite3.connect(store.config.path, isolation_level=None, check_same_thread=False)
        self._reader.execute("PRAGMA query_only=1")
        self._pending: dict[int, float] = {}  # msg_id -> when it was handed over
        self._pending_peak = 0  # the most it held since it was last compacted
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._archive: ArchivedMessages | None = None
        self.indexed = 0  # rows (re)indexed or removed since start

    def attach_archive(self, archive: ArchivedMessages) -> None:
        """Search the archived messages too (before ``start``): the follower reads the parts it has not
        read yet when it starts, and a search reads archived candidates through ``archive``."""
        self._archive = archive

    # ------------------------------------------------------------- the follower

    def written(self, msg_id: int) -> None:
        """The store was asked to write event ``msg_id`` (an append or an apply): index it once committed."""
        self._pending[msg_id] = time.monotonic()
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="flare-search-follower")

    async def flush(self) -> None:
        """Return once every event handed over before the call (and the start's catch-up) is indexed, or
        dropped because it was not stored."""
        if self._task is None:
            return
        while not self._idle.is_set():
            await self._idle.wait()

    async def close(self) -> None:
        """Index what is pending (not the rows that are not committed), stop the follower."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._reader.close()

    async def _run(self) -> None:
        try:
            await self._catch_up()
            await self._catch_up_archive()
        except Exception:
            log.exception("search index catch-up failed; messages written before this start may be missing")
        while True:
            if not self._pending:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._closing:
                # Let a batch gather, and yield: the follower spends at most ``duty`` of a core (CPU time on the
                # index's writer thread, which runs at a lower priority: its wall time stretches on a busy core),
                # so under a load the index cannot follow it lags instead of taking the CPU the send path needs.
                await asyncio.sleep(max(self._interval_s, self._busy_s * (1 - self._duty) / self._duty))
            try:
                self._busy_s = await self._follow()
            except Exception:
                log.exception("search index update failed; retrying")
                await asyncio.sleep(1.0)
            if self._closing and all(time.monotonic() - t < RETRY_S for t in self._pending.values()):
                self._pending.clear()  # not committed yet at close: the next start's catch-up reads them
                self._idle.set()
                return

    async def _follow(self) -> float:
        """Index a batch of what was handed over; returns the CPU seconds it took."""
        self._pending_peak = max(self._pending_peak, len(self._pending))
        ids = list(itertools.islice(self._pending, _CHUNK))  # not a copy of all: a backlog holds millions
        done, cpu_s = await self._index(ids)
        now = time.monotonic()
        for i in ids:
            if i in done or now - self._pending[i] > RETRY_S:
                del self._pending[i]
        if self._pending_peak > _COMPACT_FROM and len(self._pending) * 8 < self._pending_peak:
            # A dict never shrinks as it empties: after a backlog of millions its table stayed that large, and
            # each batch (and each lag read) walked its empty slots from the start to find the oldest ids.
            self._pending = dict(self._pending)
            self._pending_peak = len(self._pending)
        return cpu_s

    def lag(self) -> tuple[int, float]:
        """Events handed over and not yet indexed, and how long ago the oldest of them was (seconds)."""
        oldest = next(iter(self._pending.values()), None)  # a dict keeps insertion order
        return len(self._pending), (time.monotonic() - oldest if oldest is not None else 0.0)

    async def _catch_up(self) -> None:
        [through] = self._db.fetchone("SELECT indexed_through FROM search_state")
        cursor = snowflake_floor(snowflake_ms(through) - CATCH_UP_MARGIN_MS) if through else 0
        while True:
            ids: list[int] = await self._db.write(functools.partial(_ids_after, self._reader, max(cursor, 0)))
            if not ids:
                return
            await self._index(ids)
            cursor = ids[-1]

    async def _catch_up_archive(self) -> None:
        """Read the archived parts this index has not read (each once: ``search_parts``): their messages are
        indexed and located, unless the store holds a copy (an operation brought it back: the copy is
        indexed as any row). An index that kept its entries through the archive run rewrites nothing."""
        if self._archive is None:
            return
        done = {r[0] for r in self._db.fetchall("SELECT key FROM search_parts")}
        for key in await self._archive.part_keys():
            if key not in done:
                docs = [(r[2], r[0], r[1], _indexed_text(r[5], r[9], r[6])) for r in await self._archive.part_rows(key)]
                await self._db.write(functools.partial(_index_part, self._reader, key, docs))

    async def _index(self, ids: Sequence[int]) -> tuple[set[int], float]:
        """Index the committed rows among ``ids`` (operation events: their targets); returns those found and
        the writer thread's CPU seconds. Reading the store and writing the index both run on that thread."""
        archived = self._archive is not None
        cpu_before = self._db.writer_cpu_s  # FTS5 does much of its work at COMMIT: the whole transaction counts
        found: set[int] = await self._db.write(lambda conn: _index_rows(conn, self._reader, ids, archived))
        self.indexed += len(found)
        return found, self._db.writer_cpu_s - cpu_before

    # ------------------------------------------------------------- queries

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        if not query.scopes or query.limit <= 0:
            return []
        hot = await self._search_hot(query)
        if self._archive is None:
            return hot
        # A full page of hot hits: only archived ones newer than its last can still be on it.
        floor = int(hot[query.limit - 1].message.msg_id) if len(hot) >= query.limit else 0
        cold = await self._search_archived(query, self._archive, floor)
        seen: set[tuple[str, int]] = set()
        hits = []
        for hit in sorted(hot + cold, key=lambda h: int(h.message.msg_id), reverse=True):
            key = (hit.message.conv, hit.message.seq)
            if key not in seen:  # a message an operation brought back may be found in both for a moment
                seen.add(key)
                hits.append(hit)
        return hits[: query.limit]

    async def _search_archived(self, query: SearchQuery, archive: ArchivedMessages, floor: int) -> list[SearchHit]:
        """Archived messages (located in ``search_archived``) matching ``query`` with msg_id above ``floor``,
        read through ``archive``."""
        where, params = _scope_filters(query, "a")
        if floor:
            where.append("a.msg_id > ?")
            params.append(floor)
        match = match_expression(query.terms)
        filters = "".join(" AND " + w for w in where)
        if match:
            sql = (
                "SELECT a.conv, a.seq, a.msg_id FROM search_fts f JOIN search_archived a ON a.msg_id = f.rowid"
                f" WHERE search_fts MATCH ? AND f.rowid < ? AND a.conv IN (SELECT value FROM json_each(?)){filters}"
                " ORDER BY f.rowid DESC LIMIT ?"
            )
            first: list[Any] = [match]
        else:  # nothing to look up: the indexed text of the reader's archived messages, newest first
            for term in query.terms:
                where_term, value = _text_filter(term)
                filters += " AND " + where_term
                params.append(value)
            sql = (
                "SELECT a.conv, a.seq, a.msg_id FROM search_archived a JOIN search_docs d ON d.msg_id = a.msg_id"
                f" WHERE a.msg_id < ? AND a.conv IN (SELECT value FROM json_each(?)){filters}"
                " ORDER BY a.msg_id DESC LIMIT ?"
            )
            first = []

        async def take(rows: list[Any]) -> list[SearchHit]:
            return await hydrate(archive.get, [(r[0], r[1]) for r in rows], query)

        return await self._paged(query, sql, first, params, take)

    async def _search_hot(self, query: SearchQuery) -> list[SearchHit]:
        where: list[str] = [f"m.state = '' AND m.{_SEARCHED}"]
        scoped, params = _scope_filters(query, "m")
        where += scoped
        for column, op, value in (
            ("m.sender", "=", query.sender),
            ("m.kind", "=", query.kind),
            ("m.ts", ">=", query.since),
            ("m.ts", "<", query.until),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        match = match_expression(query.terms)
        filters = "".join(" AND " + w for w in where)
        if match:
            sql = (
                f"SELECT {_COLUMNS} FROM search_fts f JOIN store.messages m ON m.msg_id = f.rowid"
                f" WHERE search_fts MATCH ? AND f.rowid < ? AND m.conv IN (SELECT value FROM json_each(?)){filters}"
                " ORDER BY f.rowid DESC LIMIT ?"
            )
            first: list[Any] = [match]
        else:
            # Nothing to look up: the reader's conversations newest first, the body matched as a prefilter.
            for term in query.terms:
                where_term, value = _body_filter(term)
                filters += " AND " + where_term
                params.append(value)
            sql = (
                f"SELECT {_COLUMNS} FROM store.messages m"
                f" WHERE m.msg_id < ? AND m.conv IN (SELECT value FROM json_each(?)){filters}"
                " ORDER BY m.msg_id DESC LIMIT ?"
            )
            first = []

        async def take(rows: list[Any]) -> list[SearchHit]:
            hits = []
            for row in rows:
                message = message_of_row(row)
                text = searchable_text(message.kind, message.state, message.body)
                if matches(text, query.terms):
                    hits.append(SearchHit(message=message, text=text))
            return hits

        return await self._paged(query, sql, first, params, take)

    async def _paged(
        self,
        query: SearchQuery,
        sql: str,
        first: list[Any],
        params: list[Any],
        take: Callable[[list[Any]], Awaitable[list[SearchHit]]],
    ) -> list[SearchHit]:
        """Pages of ``sql`` (parameters: ``first``, the msg_id bound, the conversations, ``params``, the page
        size; the third column a msg_id), newest first, each turned into hits by ``take``, until the query's
        page is full or the rows run out."""
        convs = json.dumps([s.conv for s in query.scopes])
        batch = max(_MIN_BATCH, 2 * query.limit)
        before = query.before if query.before is not None else _MAX_ID
        hits: list[SearchHit] = []
        while len(hits) < query.limit:
            rows = self._db.fetchall(sql, (*first, before, convs, *params, batch))
            hits += await take(rows)
            if len(rows) < batch:
                break
            before = rows[-1][2]
        return hits[: query.limit]


def _scope_filters(query: SearchQuery, table: str) -> tuple[list[str], list[Any]]:
    """The conditions (and their parameters) keeping rows of ``table`` within the scopes' floors and hidden."""
    where: list[str] = []
    params: list[Any] = []
    floors = {s.conv: s.floor for s in query.scopes if s.floor}
    if floors:
        where.append(f"{table}.seq > coalesce(json_extract(?, '$.\"' || {table}.conv || '\"'), 0)")
        params.append(json.dumps(floors))
    hidden = [f"{s.conv} {seq}" for s in query.scopes for seq in s.hidden]
    if hidden:
        where.append(f"({table}.conv || ' ' || {table}.seq) NOT IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(hidden))
    return where, params


_INDEX_TABLES = ("search_fts", "search_docs", "search_state", "search_archived", "search_parts")


def _drop_other_format(db: SqliteDatabase) -> None:
    """An index made in another format (before ``detail = column``) is dropped: the follower's catch-up
    rebuilds it from the store and the archive in the background, as for a new file."""
    row = db.fetchone("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'search_fts'")
    if row is None or row[0] == FTS_TABLE.replace(" IF NOT EXISTS", ""):  # as SQLite keeps it
        return
    log.warning("the search index is in an older format: rebuilding it from the message store in the background")
    db.migrate(f"DROP TABLE IF EXISTS {table}" for table in _INDEX_TABLES)


def _ids_after(store: sqlite3.Connection, cursor: int, _conn: sqlite3.Connection) -> list[int]:
    rows = store.execute("SELECT msg_id FROM messages WHERE msg_id > ? ORDER BY msg_id LIMIT ?", (cursor, _CHUNK))
    return [r[0] for r in rows]


def _index_rows(conn: sqlite3.Connection, store: sqlite3.Connection, ids: Sequence[int], archived: bool) -> set[int]:
    """On the search database's writer thread, in its transaction: read the rows ``ids`` from the store (its
    own connection, so the store's write lock is never taken) and (re)index them or their targets. With an
    archive, a row indexed from the store is no longer located in it (an operation brought it back)."""
    rows: list[Any] = []
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = ids[i : i + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT msg_id, conv, target, kind, state, body FROM messages WHERE msg_id IN ({marks})"
        rows += store.execute(sql, tuple(chunk)).fetchall()
    docs: dict[int, str] = {}
    for msg_id, conv, target, kind, state, body in rows:
        if target is None:
            docs[msg_id] = _indexed_text(kind, state, body)
            continue
        sql = "SELECT msg_id, kind, state, body FROM messages WHERE conv = ? AND seq = ?"
        found = store.execute(sql, (conv, target)).fetchone()
        if found is not None:
            docs[found[0]] = _indexed_text(*found[1:])
    if rows:
        _UPSERT.run(conn, [(i, t) for i, t in docs.items() if t])
        conn.executemany("DELETE FROM search_docs WHERE msg_id = ?", [(i,) for i, t in docs.items() if not t])
        if archived:
            conn.executemany("DELETE FROM search_archived WHERE msg_id = ?", [(i,) for i in docs])
        top = max(r[0] for r in rows)
        conn.execute("UPDATE search_state SET indexed_through = max(indexed_through, ?)", (top,))
    return {r[0] for r in rows}


def _index_part(
    store: sqlite3.Connection, key: str, docs: Sequence[tuple[int, str, int, str]], conn: sqlite3.Connection
) -> None:
    """On the writer thread: index and locate an archived part's messages ((msg_id, conv, seq, text)),
    except those the store holds a copy of, and remember the part as read."""
    ids = [d[0] for d in docs]
    hot: set[int] = set()
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = ids[i : i + _IN_CHUNK]
        sql = f"SELECT msg_id FROM messages WHERE msg_id IN ({','.join('?' * len(chunk))})"
        hot.update(r[0] for r in store.execute(sql, tuple(chunk)))
    cold = [d for d in docs if d[0] not in hot]
    _UPSERT.run(conn, [(i, t) for i, _, _, t in cold if t])
    conn.executemany(
        "INSERT OR REPLACE INTO search_archived (msg_id, conv, seq) VALUES (?, ?, ?)", [d[:3] for d in cold if d[3]]
    )
    gone = [(d[0],) for d in cold if not d[3]]
    conn.executemany("DELETE FROM search_docs WHERE msg_id = ?", gone)
    conn.executemany("DELETE FROM search_archived WHERE msg_id = ?", gone)
    conn.execute("INSERT OR IGNORE INTO search_parts (key) VALUES (?)", (key,))


def _indexed_text(kind: str, state: str, body: bytes) -> str:
    """What the index holds of a row: its searchable text, NULs as spaces (FTS5 would cut the text there)."""
    if state or kind in UNSEARCHED_KINDS:
        return ""
    return searchable_text(kind, state, decode_stored_body(body)).replace("\x00", " ")


def _phrase(column: str, token: str) -> str:
    return f'{column} : "' + token.replace('"', '""') + '"'


def match_expression(terms: Sequence[str]) -> str:
    """The FTS5 query finding (a superset of) the messages holding every indexed term; '' if none is."""
    parts = []
    for term in terms:
        if "\x00" in term:
            continue  # FTS5 reads its query as a C string: the term is checked on the candidates only
        if len(term) >= MIN_TRIGRAM:
            trigrams = dict.fromkeys(term[i : i + MIN_TRIGRAM] for i in range(len(term) - MIN_TRIGRAM + 1))
            parts += [_phrase("text", t) for t in trigrams]
        elif is_cjk(term):
            parts.append(_phrase("grams", term * 3 if len(term) == 1 else term[0] * 2 + term[1]))
    return " AND ".join(parts)


def _body_filter(term: str) -> tuple[str, str]:
    """A prefilter on the stored JSON body for a term: it holds the term as JSON writes it."""
    escaped = _encode(term).decode()[1:-1]
    if escaped.isascii():  # SQLite's LIKE folds ASCII case
        return "CAST(m.body AS TEXT) LIKE ? ESCAPE '\\'", "%" + re.sub(r"([\\%_])", r"\\\1", escaped) + "%"
    return "flare_contains(CAST(m.body AS TEXT), ?)", fold(escaped)


def _text_filter(term: str) -> tuple[str, str]:
    """A prefilter on the indexed text (``search_docs``) for a term."""
    if term.isascii():  # SQLite's LIKE folds ASCII case
        return "d.text LIKE ? ESCAPE '\\'", "%" + re.sub(r"([\\%_])", r"\\\1", term) + "%"
    return "flare_contains(d.text, ?)", fold(term)


def _contains(text: str | None, folded: str) -> bool:
    return text is not None and folded in fold(text)
