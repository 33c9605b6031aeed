"""Message log on ClickHouse (distributed): a ClickHouse server over HTTP, or current ClickHouse in-process (chdb).

Tables and why they look as they do: clickhouse_schema.py. A change to a row (edit, recall, reaction, the
scrubbing a recall does) is a new version of that row; every read returns the latest version.

Writes go through one writer task per adapter, in call order. Appends queued while the writer is busy join one
batch: one INSERT for all of them (group insert). An ``apply`` is a write of its own between two batches. Every
INSERT makes a new part per table, which ClickHouse merges in the background: it wants few large inserts, not
many small ones. The store worker hands over a Kafka batch at a time, and under load batches grow by themselves
(the writer is busy longer, more appends queue up).

ClickHouse has no unique constraint, so before a batch is inserted the writer looks up which of its
``(conv, seq)`` are stored already: an exact replay (same ``msg_id``) succeeds and writes nothing again (the
store worker replays batches after a crash); a different message at a stored seq fails alone (``SeqTaken``)
and stores nothing; the same within one batch (the first in call order wins). The check is only sound with
one writer per conversation at a time (the store worker's Kafka partitions are keyed by conversation): two
adapters appending the same seq at the same moment can both pass it.

What this adapter does not guarantee, plainly:

- Atomicity. ClickHouse has no transactions. Each write is ordered so that a crash in the middle leaves what a
  replay completes: side tables that are keyed and idempotent first (revisions), then one INSERT into
  ``messages`` with the event and every row it changes, then the derived rows (client ids, references,
  heads), which a replay writes again. One INSERT is atomic only within one partition: an operation on a
  message from an earlier month writes two parts, and a crash between them leaves the event without its change.
- Durability beyond the server's: an INSERT is acknowledged once the server has written the part; whether
  it was fsynced is the server's setting (not by default). In distributed mode the durable log is Kafka
  (``acks=all``); these tables are what the store worker builds from it.
- Text gone at once on disk: a recall hides the text from every read at once; the older row versions that
  still hold it disappear when ClickHouse merges the parts (``OPTIMIZE TABLE ... FINAL`` forces it).
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from flare_im.backends.clickhouse_client import ClickHouseClient, connect, quote
from flare_im.backends.message_log.base import Change, ConvHead, Revision, SeqTaken, VersionConflict
from flare_im.backends.message_log.changes import edit_refs, react, reply_seq, unquote
from flare_im.backends.message_log.clickhouse_schema import (
    MESSAGE_COLUMNS,
    REVISION_COLUMNS,
    ClientIdRow,
    HeadRow,
    MessageRow,
    RefRow,
    RevisionRow,
    codecs_supported,
    columns,
    schema,
)
from flare_im.ids import snowflake_floor
from flare_im.protocol.frames import Message
from flare_im.protocol.values import decode_stored_body

S = TypeVar("S", bound=msgspec.Struct)

MAX_SEQ = 2**63 - 1
_IN_CHUNK = 1000  # values per IN list: keeps every statement far below max_query_size (256 KiB)

_encode = msgspec.json.Encoder().encode
_decode_body = decode_stored_body  # made to obey the body rule if stored before it (protocol/values.py)
_decode_reactions = msgspec.json.Decoder(dict[str, list[str]]).decode
_EMPTY = "{}"


@dataclass(frozen=True, slots=True)
class ClickHouseConfig:
    url: str  # clickhouse://[user[:password]@]host[:port]/database or chdb:///dir (clickhouse_client.py)
    max_batch: int = 10_000  # appends per INSERT
    timeout_s: float = 30.0  # per statement
    max_connections: int = 16  # statements in flight at once (HTTP)


class _Version(msgspec.Struct):
    version: str


class _Key(msgspec.Struct):
    conv: str
    seq: int
    msg_id: int


class _Top(msgspec.Struct):
    conv: str
    top_seq: int
    top_version: int


class _Max(msgspec.Struct):
    top: int


class _ClientKey(msgspec.Struct):
    sender: str
    cmid: str
    msg_id: int


@dataclass(slots=True)
class _Appends:
    rows: list[MessageRow]
    futures: list[asyncio.Future[None]]


@dataclass(slots=True)
class _Apply:
    event: MessageRow
    change: Change
    future: asyncio.Future[None]


def _in(values: Iterable[int | str]) -> str:
    return ", ".join(quote(v) if isinstance(v, str) else str(int(v)) for v in values)


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), _IN_CHUNK):
        yield values[i : i + _IN_CHUNK]


def _new_row(m: Message, list_version: int, *, reply_to: int = 0, target: int = 0) -> MessageRow:
    if not 0 < m.seq <= MAX_SEQ:
        raise ValueError(f"seq {m.seq} of {m.conv} is out of range 1..{MAX_SEQ}")
    # Like the SQLite adapter: a new event starts at version 1 with no state, whatever the Message carries.
    return MessageRow(
        conv=m.conv,
        seq=m.seq,
        msg_id=int(m.msg_id),
        sender=m.sender,
        cmid=m.cmid,
        kind=m.kind,
        body=_encode(m.body).decode(),
        ts=m.ts,
        version=1,
        state="",
        edited_at=0,
        reactions="",
        list_version=list_version,
        reply_seq=reply_to,
        target=target,
        row_version=1,
    )


def message_of_row(r: MessageRow) -> Message:
    """A stored row as the protocol's Message (also read by the ClickHouse search index)."""
    return Message(
        conv=r.conv,
        seq=r.seq,
        msg_id=str(r.msg_id),
        sender=r.sender,
        cmid=r.cmid,
        kind=r.kind,
        body=_decode_body(r.body),
        ts=r.ts,
        version=r.version,
        state=r.state,
        edited_at=r.edited_at,
        reactions=_decode_reactions(r.reactions) if r.reactions else {},
    )


def _next(row: MessageRow, list_version: int, **changes: Any) -> MessageRow:
    """The next version of ``row`` with ``changes``."""
    return msgspec.structs.replace(row, list_version=list_version, row_version=row.row_version + 1, **changes)


class ClickHouseMessageLog:
    """The MessageLog port on ClickHouse. Build it with ``await ClickHouseMessageLog.open(config)``."""

    def __init__(self, client: ClickHouseClient, config: ClickHouseConfig) -> None:
        """Takes an open client over a database whose tables exist (``open`` does both)."""
        self._client = client
        self._config = config
        self._pending: deque[_Appends | _Apply] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._writer = self._loop.create_task(self._write_loop(), name="flare-clickhouse-writer")
        self.batches = 0  # INSERTs into messages so far (group insert is observable in tests and metrics)

    @classmethod
    async def open(cls, config: ClickHouseConfig) -> ClickHouseMessageLog:
        """Connect, create the tables if missing (with column codecs where the engine has them), start."""
        client = connect(config.url, timeout_s=config.timeout_s, max_connections=config.max_connections)
        try:
            version = (await _fetch(client, "SELECT version() AS version", _Version))[0].version
            for statement in schema(codecs=codecs_supported(version)):
                await client.query(statement)
        except BaseException:
            await client.close()
            raise
        return cls(client, config)

    async def close(self) -> None:
        """Write what is queued, stop the writer, close the client."""
        self._closing = True
        self._wake.set()
        await self._writer
        await self._client.close()

    # ------------------------------------------------------------- writes (queued, in call order)

    def append(self, message: Message, version: int) -> Awaitable[None]:
        quoted = reply_seq(message.body) if "reply_to" in message.body else None
        row = _new_row(message, version, reply_to=quoted or 0)
        future = self._queued()
        tail = self._pending[-1] if self._pending else None
        if isinstance(tail, _Appends) and len(tail.rows) < self._config.max_batch:
            tail.rows.append(row)
            tail.futures.append(future)
        else:
            self._pending.append(_Appends([row], [future]))
        return future

    def apply(self, event: Message, change: Change, version: int) -> Awaitable[None]:
        row = _new_row(event, version, target=change.target)
        future = self._queued()
        self._pending.append(_Apply(row, change, future))
        return future

    def _queued(self) -> asyncio.Future[None]:
        if self._closing:
            raise RuntimeError("ClickHouseMessageLog is closed")
        self._wake.set()
        return self._loop.create_future()

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._pending.popleft()  # a batch taken off the queue takes no more appends
            try:
                if isinstance(item, _Appends):
                    await self._write_appends(item)
                else:
                    await self._write_apply(item)
                    _settle(item.future, None)
            except Exception as exc:
                for future in item.futures if isinstance(item, _Appends) else [item.future]:
                    _settle(future, exc)

    async def _write_appends(self, batch: _Appends) -> None:
        rows = batch.rows
        errors: list[Exception | None] = [None] * len(rows)
        first: dict[tuple[str, int], int] = {}  # (conv, seq) -> index of its first row in the batch
        follows: dict[int, int] = {}  # a replay within the batch -> the row it repeats
        for i, row in enumerate(rows):
            j = first.setdefault((row.conv, row.seq), i)
            if j != i:
                if rows[j].msg_id == row.msg_id:
                    follows[i] = j
                else:
                    errors[i] = SeqTaken(f"{row.conv}#{row.seq} is taken (in the same batch)")
        unique = [rows[i] for i in first.values()]
        stored, heads = await asyncio.gather(
            self._stored_ids([(r.conv, r.seq) for r in unique]), self._heads_of({r.conv for r in unique})
        )
        fresh: list[MessageRow] = []
        accepted: list[MessageRow] = []  # fresh rows and replays: their derived rows are (re)written
        for i in first.values():
            row = rows[i]
            existing = stored.get((row.conv, row.seq))
            if existing is None:
                fresh.append(row)
            elif existing != row.msg_id:
                errors[i] = SeqTaken(f"{row.conv}#{row.seq} is taken")
                continue
            accepted.append(row)
        if fresh:
            await self._insert("messages", fresh)
            self.batches += 1
        await self._write_derived(accepted, heads)
        for i, future in enumerate(batch.futures):
            _settle(future, errors[follows.get(i, i)])

    async def _write_apply(self, op: _Apply) -> None:
        event, change = op.event, op.change
        conv = event.conv
        found, heads = await asyncio.gather(self._latest(conv, [change.target, event.seq]), self._heads_of({conv}))
        at_seq = found.get(event.seq)
        if at_seq is not None and at_seq.msg_id == event.msg_id:
            await self._write_derived([event], heads)  # a replay: the change was written with the event
            return
        current = found.get(change.target)
        if current is None:
            raise LookupError(f"no message {conv}#{change.target}")
        if (change.state or change.body is not None) and change.version != current.version + 1:
            raise VersionConflict(message_of_row(current))
        if at_seq is not None:
            raise SeqTaken(f"{conv}#{event.seq} is taken")
        version = event.list_version
        changed: list[MessageRow] = [event]
        revisions: list[RevisionRow] = []
        if change.state:
            changed_rows, revisions = await self._remove_content(current, change, version)
            changed.extend(changed_rows)
        elif change.body is not None:
            revisions.append(
                RevisionRow(
                    conv=conv,
                    seq=current.seq,
                    version=current.version,
                    body=current.body,
                    ts=current.edited_at or current.ts,
                    deleted=0,
                    row_version=1,
                )
            )
            body = _encode(change.body).decode()
            changed.append(_next(current, version, body=body, version=change.version, edited_at=change.edited_at))
        elif change.reaction is not None:
            reactions = react(_decode_reactions(current.reactions) if current.reactions else {}, *change.reaction)
            changed.append(_next(current, version, reactions=_encode(reactions).decode() if reactions else ""))
        if revisions:
            await self._insert("revisions", revisions)
        await self._insert("messages", changed)
        self.batches += 1
        await self._write_derived([event], heads)

    async def _remove_content(
        self, current: MessageRow, change: Change, version: int
    ) -> tuple[list[MessageRow], list[RevisionRow]]:
        """The rows a recall/delete rewrites (see MessageLog.apply): the target, its edit events, the quotes of
        it in replies, their revisions and edit events; and its own revisions, deleted."""
        conv, target, state = current.conv, current.seq, change.state
        refs = await self._refs(conv, [target])
        edits = [r.seq for r in refs if r.kind == "edit"]
        replies = [r.seq for r in refs if r.kind == "reply"]
        reply_edits = [r.seq for r in await self._refs(conv, replies) if r.kind == "edit"] if replies else []
        rows, history = await asyncio.gather(
            self._latest(conv, edits + replies + reply_edits), self._revisions_of(conv, [target, *replies])
        )
        changed = [_next(current, version, body=_EMPTY, state=state, version=change.version, edited_at=0, reactions="")]
        revisions = [
            msgspec.structs.replace(r, body=_EMPTY, deleted=1, row_version=r.row_version + 1)
            for r in history.get(target, [])
        ]
        for seq in edits:
            if (row := rows.get(seq)) is not None:
                changed.append(_next(row, version, body=_encode(edit_refs(_decode_body(row.body))).decode()))
        quoting = set(replies)
        for seq in replies + reply_edits:
            row = rows.get(seq)
            if row is None:
                continue
            body = _decode_body(row.body)
            holder = body if seq in quoting else body.get("body")  # an edit event carries the new body inside
            if isinstance(holder, dict) and unquote(holder, target, state):
                changed.append(_next(row, version, body=_encode(body).decode()))
        for seq in replies:
            for revision in history.get(seq, []):
                body = _decode_body(revision.body)
                if unquote(body, target, state):
                    revisions.append(
                        msgspec.structs.replace(
                            revision, body=_encode(body).decode(), row_version=revision.row_version + 1
                        )
                    )
        return changed, revisions

    async def _write_derived(self, rows: list[MessageRow], heads: dict[str, HeadRow]) -> None:
        """Client ids, references and heads of stored rows; written again for a replay (all idempotent)."""
        if not rows:
            return
        ids = [
            ClientIdRow(sender=r.sender, cmid=r.cmid, msg_id=r.msg_id, conv=r.conv, seq=r.seq, ts=r.ts) for r in rows
        ]
        refs = [RefRow(conv=r.conv, ref=r.reply_seq, seq=r.seq, kind="reply") for r in rows if r.reply_seq]
        edits = (r for r in rows if r.target and r.kind == "edit")
        refs += [RefRow(conv=r.conv, ref=r.target, seq=r.seq, kind="edit") for r in edits]
        for r in rows:
            known = heads.get(r.conv)
            if known is None:
                heads[r.conv] = HeadRow(conv=r.conv, max_seq=r.seq, version=r.list_version)
            else:
                heads[r.conv] = HeadRow(
                    conv=r.conv, max_seq=max(known.max_seq, r.seq), version=max(known.version, r.list_version)
                )
        touched = {r.conv for r in rows}
        writes = [self._insert("client_ids", ids), self._insert("conv_heads", [heads[c] for c in touched])]
        if refs:
            writes.append(self._insert("message_refs", refs))
        await asyncio.gather(*writes)

    async def _insert(self, table: str, rows: Sequence[msgspec.Struct]) -> None:
        data = b"\n".join(_encode(r) for r in rows)
        await self._client.insert(f"INSERT INTO {table} ({columns(type(rows[0]))}) FORMAT JSONEachRow", data)

    # ------------------------------------------------------------- lookups shared by reads and writes

    async def _stored_ids(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """msg_id of each of ``keys`` that is stored (every version of a row has the same msg_id)."""
        out: dict[tuple[str, int], int] = {}
        for chunk in _chunks(keys):
            tuples = ", ".join(f"({quote(conv)}, {int(seq)})" for conv, seq in chunk)
            sql = f"SELECT DISTINCT conv, seq, msg_id FROM messages WHERE (conv, seq) IN ({tuples})"
            out.update(((k.conv, k.seq), k.msg_id) for k in await _fetch(self._client, sql, _Key))
        return out

    async def _heads_of(self, convs: Iterable[str]) -> dict[str, HeadRow]:
        out: dict[str, HeadRow] = {}
        for chunk in _chunks(sorted(convs)):
            sql = (
                "SELECT conv, max(max_seq) AS top_seq, max(version) AS top_version FROM conv_heads"
                f" WHERE conv IN ({_in(chunk)}) GROUP BY conv"
            )
            for t in await _fetch(self._client, sql, _Top):
                out[t.conv] = HeadRow(conv=t.conv, max_seq=t.top_seq, version=t.top_version)
        return out

    async def _latest(self, conv: str, seqs: Iterable[int]) -> dict[int, MessageRow]:
        """The latest version of each stored row among ``seqs`` of ``conv``."""
        out: dict[int, MessageRow] = {}
        for chunk in _chunks(sorted({s for s in seqs if 0 < s <= MAX_SEQ})):
            sql = (
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv = {quote(conv)} AND seq IN ({_in(chunk)})"
                " ORDER BY seq, row_version DESC LIMIT 1 BY seq"
            )
            out.update((r.seq, r) for r in await _fetch(self._client, sql, MessageRow))
        return out

    async def _refs(self, conv: str, seqs: list[int]) -> list[RefRow]:
        out: list[RefRow] = []
        for chunk in _chunks(seqs):
            sql = (
                f"SELECT DISTINCT {columns(RefRow)} FROM message_refs"
                f" WHERE conv = {quote(conv)} AND ref IN ({_in(chunk)}) ORDER BY ref, seq"
            )
            out.extend(await _fetch(self._client, sql, RefRow))
        return out

    async def _revisions_of(self, conv: str, seqs: list[int]) -> dict[int, list[RevisionRow]]:
        """The revisions of each of ``seqs`` that are not deleted, oldest first (latest row versions)."""
        out: dict[int, list[RevisionRow]] = {}
        for chunk in _chunks(seqs):
            sql = (
                f"SELECT {REVISION_COLUMNS} FROM revisions WHERE conv = {quote(conv)} AND seq IN ({_in(chunk)})"
                " ORDER BY seq, version, row_version DESC LIMIT 1 BY seq, version"
            )
            for r in await _fetch(self._client, sql, RevisionRow):
                if not r.deleted:
                    out.setdefault(r.seq, []).append(r)
        return out

    # ------------------------------------------------------------- reads

    async def get(self, conv: str, seqs: Sequence[int]) -> list[Message]:
        rows = await self._latest(conv, seqs)
        return [message_of_row(rows[s]) for s in sorted(rows)]

    async def revisions(self, conv: str, seq: int) -> list[Revision]:
        if not 0 < seq <= MAX_SEQ:
            return []
        history = (await self._revisions_of(conv, [seq])).get(seq, [])
        return [Revision(version=r.version, body=_decode_body(r.body), ts=r.ts) for r in history]

    async def active_conversations(self, since_ms: int) -> int:
        """Conversations with an event stored at or after ``since_ms`` (admin statistics; the store worker's lag
        behind the queue is not counted)."""
        sql = f"SELECT uniqExact(conv) AS top FROM messages WHERE ts >= {int(since_ms)}"
        return (await _fetch(self._client, sql, _Max))[0].top

    async def max_seq(self, conv: str) -> int:
        sql = f"SELECT max(max_seq) AS top FROM conv_heads WHERE conv = {quote(conv)}"
        return (await _fetch(self._client, sql, _Max))[0].top

    async def heads(self, convs: Sequence[str]) -> dict[str, ConvHead]:
        out: dict[str, ConvHead] = {}
        for chunk in _chunks(sorted(set(convs))):
            heads = await self._heads_of(chunk)
            if not heads:
                continue
            tuples = ", ".join(f"({quote(h.conv)}, {h.max_seq})" for h in heads.values())
            sql = (
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE (conv, seq) IN ({tuples})"
                " ORDER BY conv, seq, row_version DESC LIMIT 1 BY conv, seq"
            )
            last = {r.conv: r for r in await _fetch(self._client, sql, MessageRow)}
            for conv, h in heads.items():
                row = last.get(conv)
                out[conv] = ConvHead(
                    conv=conv, max_seq=h.max_seq, version=h.version, last=message_of_row(row) if row else None
                )
        return out

    async def range(self, conv: str, *, after: int, before: int, limit: int, newest: bool) -> list[Message]:
        after, before = max(after, 0), min(before, MAX_SEQ)
        if limit <= 0 or before <= after + 1:
            return []
        order = "DESC" if newest else "ASC"
        sql = (
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv = {quote(conv)} AND seq > {int(after)}"
            f" AND seq < {int(before)} ORDER BY seq {order}, row_version DESC LIMIT 1 BY seq LIMIT {int(limit)}"
        )
        rows = await _fetch(self._client, sql, MessageRow)
        if newest:
            rows.reverse()
        return [message_of_row(r) for r in rows]

    async def find_by_client_id(self, sender: str, cmid: str, *, since_ms: int) -> Message | None:
        sql = (
            f"SELECT DISTINCT conv, seq, msg_id, ts FROM client_ids"
            f" WHERE sender = {quote(sender)} AND cmid = {quote(cmid)} AND msg_id >= {snowflake_floor(since_ms)}"
            " ORDER BY ts, msg_id"
        )
        for key in await _fetch(self._client, sql, _Key):
            row = (await self._latest(key.conv, [key.seq])).get(key.seq)
            if row is not None and row.msg_id == key.msg_id:
                return message_of_row(row)
        return None

    async def recent_client_ids(self, since_ms: int, limit: int) -> list[tuple[str, str]]:
        if limit <= 0:
            return []
        sql = (
            f"SELECT sender, cmid, msg_id FROM client_ids WHERE msg_id >= {snowflake_floor(since_ms)}"
            f" ORDER BY msg_id DESC LIMIT 1 BY msg_id LIMIT {int(limit)}"
        )
        return [(k.sender, k.cmid) for k in await _fetch(self._client, sql, _ClientKey)]

    async def max_version(self) -> int:
        return (await _fetch(self._client, "SELECT max(version) AS top FROM conv_heads", _Max))[0].top


async def _fetch(client: ClickHouseClient, sql: str, row_type: type[S]) -> list[S]:
    """Rows of ``sql`` as ``row_type``. JSONEachRow, decoded leniently (``strict=False``): ClickHouse 18.16
    quotes 64-bit integers ("1") unless told not to, current ClickHouse does not."""
    payload = await client.query(f"{sql} FORMAT JSONEachRow")
    return _decoder(row_type).decode_lines(payload)


@functools.cache
def _decoder(row_type: type[S]) -> msgspec.json.Decoder[S]:
    return msgspec.json.Decoder(row_type, strict=False)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the caller cancelled its wait
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
