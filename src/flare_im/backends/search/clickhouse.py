"""Search on ClickHouse (cluster): the message store's own ``messages`` table, latest row version only.

No second copy of the text: the store worker already writes every message, edit and recall to ``messages``
(a changed row is a new row version, see message_log/clickhouse_schema.py), so searching the latest
versions finds an edit by its new text and a recall by nothing, with nothing more on the write path.

A search reads only the reader's conversations (the table's primary key starts with ``conv``) and, in
them, the rows whose JSON body contains every term (``lowerUTF8(body) LIKE``, the term JSON-escaped as in
the body); of those rows' latest versions it keeps the ones that still contain them, newest first. The
body holds more than the searchable text (keys, quotes of other messages, app fields), so each candidate is
checked in Python against its searchable text (``base.searchable_text``) and the next candidates are read
until the page is full.

On current ClickHouse (22.1 and later) ``messages`` gets an n-gram bloom-filter skip index over
``lowerUTF8(body)``: granules that cannot hold a term of three or more characters are not read. ClickHouse
18.16 has no skip indexes worth using; the same query scans the reader's conversations, with the same
results. Parts written before the index was added are indexed when they are merged.

Archived messages: the archive pass (archive/clickhouse_source.py) deletes their rows from ``messages`` but
first writes their searchable text to ``search_archive`` (conv, seq, msg_id, sender, kind, ts, text; sorted
by conv, seq: a search reads only the reader's conversations there too). Given the archive reader
(``archive``), a search also scans that table with the same conditions and reads the candidates in their
current state through it (archived.py): an operation made after archiving is applied to a hot copy, which
wins. The table is never deleted from: it is the index of the cold tier, a fraction of its size
(docs/operations.md, Storage tiers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from flare_im.backends.clickhouse_client import ClickHouseClient, connect, quote
from flare_im.backends.message_log.clickhouse import message_of_row
from flare_im.backends.message_log.clickhouse_schema import MESSAGE_COLUMNS, MessageRow, schema
from flare_im.backends.search.archived import hydrate
from flare_im.backends.search.base import (
    UNSEARCHED_KINDS,
    ArchivedMessages,
    SearchHit,
    SearchQuery,
    SearchScope,
    matches,
    searchable_text,
)
from flare_im.protocol.values import decode_stored_body

SKIP_INDEX_SINCE = (22, 1)
_SKIP_INDEX = (
    "ALTER TABLE messages ADD INDEX IF NOT EXISTS search_ngrams lowerUTF8(body)"
    " TYPE ngrambf_v1(3, 65536, 2, 0) GRANULARITY 4"
)
_SCOPE_CHUNK = 500  # conversations per statement: keeps it far below max_query_size (256 KiB)
_MIN_BATCH = 50

ARCHIVE_TABLE = "search_archive"
_ARCHIVE_COLUMNS = (
    ("conv", "String", "ZSTD(1)"),
    ("seq", "UInt64", "Delta, ZSTD(1)"),
    ("msg_id", "UInt64", "Delta, ZSTD(1)"),
    ("sender", "String", "ZSTD(1)"),
    ("kind", "String", "ZSTD(1)"),
    ("ts", "Int64", "Delta, ZSTD(1)"),
    ("text", "String", "ZSTD(3)"),
)


class ArchivedText(msgspec.Struct, kw_only=True):
    """A row of ``search_archive``: an archived message's searchable text and what a search filters on."""

    conv: str
    seq: int
    msg_id: int
    sender: str
    kind: str
    ts: int
    text: str


class _Candidate(msgspec.Struct):
    conv: str
    seq: int
    msg_id: int


def archive_schema(*, codecs: bool) -> str:
    """``search_archive``: a part written twice (a resumed pass) collapses on (conv, seq) when merged, and
    reads take one row per message before that."""
    cols = ", ".join(f"{c} {t} CODEC({codec})" if codecs else f"{c} {t}" for c, t, codec in _ARCHIVE_COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS {ARCHIVE_TABLE} ({cols}) ENGINE = ReplacingMergeTree() ORDER BY (conv, seq)"


def archived_texts(rows: Sequence[tuple[Any, ...]]) -> list[ArchivedText]:
    """The ``search_archive`` rows of archive rows (archive/format.py's COLUMNS order): those with text."""
    out = []
    for r in rows:
        text = searchable_text(r[5], r[9], decode_stored_body(r[6]))
        if text:
            out.append(ArchivedText(conv=r[0], seq=r[1], msg_id=r[2], sender=r[3], kind=r[5], ts=r[7], text=text))
    return out


_encode = msgspec.json.Encoder().encode
_candidates = msgspec.json.Decoder(_Candidate, strict=False)
_rows = msgspec.json.Decoder(MessageRow, strict=False)


class ClickHouseSearchIndex:
    """The SearchIndex port over a ClickHouse message store. Build it with ``await ClickHouseSearchIndex.open(url)``."""

    def __init__(
        self, client: ClickHouseClient, *, owns_client: bool = True, archive: ArchivedMessages | None = None
    ) -> None:
        self._client = client
        self._owns_client = owns_client
        self._archive = archive

    @classmethod
    async def open(
        cls, url: str, *, timeout_s: float = 30.0, archive: ArchivedMessages | None = None
    ) -> ClickHouseSearchIndex:
        """Connect to the message store at ``url`` (its tables are created if missing, as the log does);
        with ``archive``, archived messages are searched too."""
        client = connect(url, timeout_s=timeout_s)
        try:
            version = (await client.query("SELECT version()")).decode().strip()
            parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
            for statement in [*schema(codecs=parts >= (20, 1)), archive_schema(codecs=parts >= (20, 1))]:
                await client.query(statement)
            if parts >= SKIP_INDEX_SINCE:
                await client.query(_SKIP_INDEX)
        except BaseException:
            await client.close()
            raise
        return cls(client, archive=archive)

    async def flush(self) -> None:
        return None  # reads the store itself

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        if not query.scopes or query.limit <= 0:
            return []
        hits: list[SearchHit] = []
        for i in range(0, len(query.scopes), _SCOPE_CHUNK):
            hot = await self._search_chunk(query, i)
            hits += hot
            if self._archive is not None:
                # A full page of hot hits: only archived ones newer than its last can still be on it.
                floor = int(hot[query.limit - 1].message.msg_id) if len(hot) >= query.limit else 0
                hits += await self._search_archived(query, i, self._archive, floor)
        seen: set[tuple[str, int]] = set()
        out = []
        for hit in sorted(hits, key=lambda h: int(h.message.msg_id), reverse=True):
            key = (hit.message.conv, hit.message.seq)
            if key not in seen:  # an archived message an operation brought back is found in both
                seen.add(key)
                out.append(hit)
        return out[: query.limit]

    async def _search_archived(
        self, query: SearchQuery, start: int, archive: ArchivedMessages, floor: int
    ) -> list[SearchHit]:
        """Archived messages of the chunk's scopes whose archived text holds the terms, with msg_id above
        ``floor``, read through ``archive``."""
        scopes = query.scopes[start : start + _SCOPE_CHUNK]
        likes = " AND ".join(f"lowerUTF8(text) LIKE {quote(_like(t.lower()))}" for t in query.terms)
        fixed = [*_conditions(query, scopes), likes] + ([f"msg_id > {int(floor)}"] if floor else [])
        batch = max(_MIN_BATCH, 2 * query.limit)
        before = query.before
        hits: list[SearchHit] = []
        while len(hits) < query.limit:
            where = " AND ".join(fixed + ([f"msg_id < {int(before)}"] if before is not None else []))
            sql = (
                f"SELECT conv, seq, msg_id FROM {ARCHIVE_TABLE} WHERE {where}"
                f" ORDER BY msg_id DESC LIMIT 1 BY conv, seq LIMIT {batch} FORMAT JSONEachRow"
            )
            rows = _candidates.decode_lines(await self._client.query(sql))
            # A message with a row in ``messages`` (an operation copied it back) is the hot search's: one
            # query for all, and the others are read from the archive alone (no query per conversation).
            hot = await self._stored([(r.conv, r.seq) for r in rows])
            hits += await hydrate(
                archive.archived, [(r.conv, r.seq) for r in rows if (r.conv, r.seq) not in hot], query
            )
            if len(rows) < batch:
                break
            before = rows[-1].msg_id
        return hits[: query.limit]

    async def _stored(self, pairs: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of ``pairs`` (conv, seq) have a row in ``messages``."""
        if not pairs:
            return set()
        convs = ", ".join(quote(c) for c in sorted({c for c, _ in pairs}))
        tuples = ", ".join(f"({quote(c)}, {int(s)})" for c, s in pairs)
        sql = (
            f"SELECT DISTINCT conv, seq, toUInt64(0) AS msg_id FROM messages WHERE conv IN ({convs})"
            f" AND (conv, seq) IN ({tuples}) FORMAT JSONEachRow"
        )
        return {(r.conv, r.seq) for r in _candidates.decode_lines(await self._client.query(sql))}

    async def _search_chunk(self, query: SearchQuery, start: int) -> list[SearchHit]:
        scopes = query.scopes[start : start + _SCOPE_CHUNK]
        convs = ", ".join(quote(s.conv) for s in scopes)
        likes = " AND ".join(f"lowerUTF8(body) LIKE {quote(_pattern(t))}" for t in query.terms)
        fixed = [*_conditions(query, scopes), likes, f"kind NOT IN ({', '.join(quote(k) for k in UNSEARCHED_KINDS)})"]
        batch = max(_MIN_BATCH, 2 * query.limit)
        before = query.before
        hits: list[SearchHit] = []
        while len(hits) < query.limit:
            where = " AND ".join(fixed + ([f"msg_id < {int(before)}"] if before is not None else []))
            # Rows of which some version holds the terms, then their latest versions, which must still hold them.
            sql = (
                f"SELECT {MESSAGE_COLUMNS} FROM ("
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv IN ({convs})"
                f" AND (conv, seq) IN (SELECT conv, seq FROM messages WHERE {where})"
                " ORDER BY conv, seq, row_version DESC LIMIT 1 BY conv, seq"
                f") WHERE state = '' AND {likes} ORDER BY msg_id DESC LIMIT {batch} FORMAT JSONEachRow"
            )
            rows = _rows.decode_lines(await self._client.query(sql))
            for row in rows:
                message = message_of_row(row)
                text = searchable_text(message.kind, message.state, message.body)
                if text and matches(text, query.terms):
                    hits.append(SearchHit(message=message, text=text))
            if len(rows) < batch:
                break
            before = rows[-1].msg_id
        return hits[: query.limit]


def _conditions(query: SearchQuery, scopes: Sequence[SearchScope]) -> list[str]:
    """What keeps a row within ``scopes`` (conversation, floor, hidden) and the query's sender, kind and ts."""
    fixed = [f"conv IN ({', '.join(quote(s.conv) for s in scopes)})"]
    for column, op, value in (
        ("sender", "=", query.sender),
        ("kind", "=", query.kind),
        ("ts", ">=", query.since),
        ("ts", "<", query.until),
    ):
        if value is not None:
            fixed.append(f"{column} {op} {quote(value) if isinstance(value, str) else int(value)}")
    floors = [s for s in scopes if s.floor]
    if floors:
        names = ", ".join(quote(s.conv) for s in floors)
        values = ", ".join(str(int(s.floor)) for s in floors)
        fixed.append(f"seq > transform(conv, [{names}], [{values}], toUInt64(0))")
    hidden = [f"({quote(s.conv)}, {int(seq)})" for s in scopes for seq in sorted(s.hidden)]
    if hidden:
        fixed.append(f"(conv, seq) NOT IN ({', '.join(hidden)})")
    return fixed


def _pattern(term: str) -> str:
    """A LIKE pattern finding ``term`` as it is written inside a JSON string, lower-cased."""
    return _like(_encode(term).decode()[1:-1].lower())


def _like(text: str) -> str:
    """A LIKE pattern finding ``text`` anywhere."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
