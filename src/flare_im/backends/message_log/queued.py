"""The message log of a gateway node in distributed mode (DESIGN.md §3): the durable queue, L0 and the store.

An event counts as stored once the queue (Kafka, ``acks=all``, keyed by conversation so its events stay in
order) has acknowledged it and L0 (Redis) holds it; the store worker moves the queue into the store
(ClickHouse) in batches. Reads take recent events from L0 and older ones from the store, so an event is
readable the moment it is acked. When L0 has lost a conversation (Redis restarted or evicted it), reads
that must be complete (the max seq that seeds the sequencer, a range) first wait until the worker has
written everything the queue had acknowledged, then read the store: a seq is never reused, and nothing
acknowledged is skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgspec

from flare_im.backends.message_log.base import Change, ConvHead, MessageLog, Revision, VersionConflict, changed
from flare_im.backends.message_log.changes import edit_refs, unquoted
from flare_im.backends.message_log.recent_cache import RecentCache
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import Message


class ChangeRecord(msgspec.Struct, array_like=True, omit_defaults=True):
    target: int
    version: int
    state: str = ""
    body: dict[str, Any] | None = None
    edited_at: int = 0
    reaction: tuple[str, str, bool] | None = None


class LogRecord(msgspec.Struct, array_like=True, omit_defaults=True):
    """One event on the messages topic: the event, its list version and, for an operation, its change."""

    message: Message
    version: int
    change: ChangeRecord | None = None

    def to_change(self) -> Change | None:
        c = self.change
        if c is None:
            return None
        return Change(c.target, c.version, c.state, c.body, c.edited_at, c.reaction)


encode_record = msgspec.msgpack.Encoder().encode
decode_record = msgspec.msgpack.Decoder(LogRecord).decode


class Publisher(Protocol):
    """What this log needs of the queue's producer (backends/queue)."""

    def publish(self, topic: str, key: str, value: bytes) -> Awaitable[Any]: ...

    async def partition_for(self, topic: str, key: str) -> int: ...

    async def end_offsets(self, topic: str) -> dict[int, int]: ...


WorkerOffsets = Callable[[], Awaitable[dict[int, int]]]  # the store worker group's committed offsets


class QueuedMessageLog:
    def __init__(
        self,
        *,
        producer: Publisher,
        topic: str,
        cache: RecentCache,
        store: MessageLog,
        worker_offsets: WorkerOffsets,
        catch_up_timeout_s: float = 15.0,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._cache = cache
        self._store = store
        self._worker_offsets = worker_offsets
        self._catch_up_timeout_s = catch_up_timeout_s
        self._gates: dict[str, asyncio.Future[None]] = {}  # conversation -> its last operation in progress

    # ------------------------------------------------------------------ writes

    def append(self, message: Message, version: int) -> Awaitable[None]:
        gate = self._gates.get(message.conv)
        if gate is not None:  # an operation of this conversation was called first: it goes first
            return self._append_after(gate, message, version)
        published = self._producer.publish(self._topic, message.conv, encode_record(LogRecord(message, version)))
        return self._then_cache(published, message, version)

    async def _append_after(self, gate: asyncio.Future[None], message: Message, version: int) -> None:
        await asyncio.wait([gate])
        await self.append(message, version)

    async def _then_cache(self, published: Awaitable[Any], message: Message, version: int) -> None:
        # Durable first: L0 never shows what the queue has not acknowledged. The queue acknowledges one
        # conversation's records in publish order, so its L0 writes are queued in call order too.
        await published
        await self._cache.put(message, version)

    def apply(self, event: Message, change: Change, version: int) -> Awaitable[None]:
        conv = event.conv
        before = self._gates.get(conv)
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gates[conv] = gate
        return self._apply_in_turn(before, gate, event, change, version)

    async def _apply_in_turn(
        self, before: asyncio.Future[None] | None, gate: asyncio.Future[None], event: Message, change: Change, v: int
    ) -> None:
        try:
            if before is not None:
                await asyncio.wait([before])
            # Operations of one conversation, on any node, one at a time: each reads the target as the
            # previous one left it (reactions are read-modify-write of L0's copy).
            async with self._cache.lock(f"op:{event.conv}"):
                await self._apply(event, change, v)
        finally:
            gate.set_result(None)
            if self._gates.get(event.conv) is gate:
                del self._gates[event.conv]

    async def _apply(self, event: Message, change: Change, version: int) -> None:
        found = await self.get(event.conv, [change.target])
        if not found:
            raise LookupError(f"no message {event.conv}#{change.target}")
        target = found[0]
        if change.state or change.body is not None:
            if change.version != target.version + 1:
                raise VersionConflict(target)
            # Another node may have changed it since the read: one compare-and-set decides for all nodes.
            current = await self._cache.claim_version(event.conv, target.seq, target.version, change.version)
            if current is not None:
                raise VersionConflict(msgspec.structs.replace(target, version=current))
        c = change
        record = LogRecord(event, version, ChangeRecord(c.target, c.version, c.state, c.body, c.edited_at, c.reaction))
        await self._producer.publish(self._topic, event.conv, encode_record(record))
        await self._cache.put(event, version)
        await self._cache.update(changed(target, change))
        if change.state:
            await self._scrub_cached(event.conv, target, change.state)

    async def _scrub_cached(self, conv: str, target: Message, state: str) -> None:
        """L0's copies of edit events and quotes of a recalled message lose its text, as in the store."""
        head = await self._cache.head(conv)
        if head is None:
            return
        lo = max(1, head[0] - self._cache.keep + 1)
        held = await self._cache.get(conv, list(range(lo, head[0] + 1)))
        for m in held.values():
            scrubbed = scrub_reference(m, target.seq, state)
            if scrubbed is not None:
                await self._cache.update(scrubbed)

    # ------------------------------------------------------------------ reads

    async def max_seq(self, conv: str) -> int:
        head = await self._cache.head(conv)
        if head is not None:
            return head[0]
        await self._caught_up(conv)
        return await self._store.max_seq(conv)

    async def heads(self, convs: Sequence[str]) -> dict[str, ConvHead]:
        cached = await self._cache.heads(convs)
        rest = [c for c in convs if c not in cached]
        out = await self._store.heads(rest) if rest else {}
        for conv, (max_seq, version, last) in cached.items():
            if last is None:
                last = next(iter(await self.get(conv, [max_seq])), None)
            out[conv] = ConvHead(conv=conv, max_seq=max_seq, version=version, last=last)
        return out

    async def get(self, conv: str, seqs: Sequence[int]) -> list[Message]:
        wanted = sorted(set(seqs))
        found = await self._cache.get(conv, wanted)
        missing = [s for s in wanted if s not in found]
        if missing:
            for m in await self._store.get(conv, missing):
                found.setdefault(m.seq, m)
            head = await self._cache.head(conv)
            if head is None or any(s <= head[0] and s not in found for s in missing):
                # Possibly acknowledged, not in L0 and not yet in the store: wait for the worker.
                await self._caught_up(conv)
                for m in await self._store.get(conv, [s for s in missing if s not in found]):
                    found[m.seq] = m
            patches = await self._cache.patches(conv)
            found.update((s, m) for s, m in patches.items() if s in found)
        return [found[s] for s in wanted if s in found]

    async def range(self, conv: str, *, after: int, before: int, limit: int, newest: bool) -> list[Message]:
        max_seq = await self.max_seq(conv)
        hi = min(before - 1, max_seq)
        if hi <= after:
            return []
        seqs = list(range(hi - limit + 1, hi + 1)) if newest else list(range(after + 1, after + limit + 1))
        seqs = [s for s in seqs if after < s <= hi]
        return await self.get(conv, seqs)

    # Rare reads (edit history, the idempotency fallback, start-up): from the store once it caught up.

    async def revisions(self, conv: str, seq: int) -> list[Revision]:
        await self._caught_up(conv)
        return await self._store.revisions(conv, seq)

    async def find_by_client_id(self, sender: str, cmid: str, *, since_ms: int) -> Message | None:
        await self._caught_up(None)
        found = await self._store.find_by_client_id(sender, cmid, since_ms=since_ms)
        if found is None:
            return None
        current = await self.get(found.conv, [found.seq])
        return current[0] if current else found

    async def recent_client_ids(self, since_ms: int, limit: int) -> list[tuple[str, str]]:
        await self._caught_up(None)
        return await self._store.recent_client_ids(since_ms, limit)

    async def max_version(self) -> int:
        await self._caught_up(None)
        return await self._store.max_version()

    async def _caught_up(self, conv: str | None) -> None:
        """Wait until the store worker has committed everything the queue held (for ``conv``'s partition,
        or all partitions)."""
        ends = await self._producer.end_offsets(self._topic)
        if conv is not None:
            partition = await self._producer.partition_for(self._topic, conv)
            ends = {partition: ends.get(partition, 0)}
        deadline = time.monotonic() + self._catch_up_timeout_s
        while True:
            committed = await self._worker_offsets()
            if all(committed.get(p, 0) >= end for p, end in ends.items()):
                return
            if time.monotonic() > deadline:
                raise FlareError(ErrorCode.UNAVAILABLE, "the message store is behind; retry shortly")
            await asyncio.sleep(0.02)


def scrub_reference(m: Message, target: int, state: str) -> Message | None:
    """``m`` without the text of recalled message ``target`` (an edit event of it, a reply quoting it, or
    an edit event of such a reply); None when ``m`` carries none of it."""
    body = m.body
    if m.kind == "edit" and body.get("target") == target and "body" in body:
        return msgspec.structs.replace(m, body=edit_refs(body))
    if m.kind == "edit" and isinstance(body.get("body"), dict):
        inner = unquoted(body["body"], target, state)
        return (
            None if inner is None or inner == body["body"] else msgspec.structs.replace(m, body={**body, "body": inner})
        )
    outer = unquoted(body, target, state)
    return None if outer is None or outer == body else msgspec.structs.replace(m, body=outer)
