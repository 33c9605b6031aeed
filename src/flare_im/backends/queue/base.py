"""The durable queue port (DESIGN.md §5): the messages topic keyed by conversation id, the offline-push queue.

Kafka's model, which the in-process twin copies:

- A topic has a fixed number of partitions. A record's key chooses its partition (``key_partition``: murmur2,
  Kafka's default partitioner, so every process and both adapters agree); records with one key are stored in
  one partition in publish order, at offsets 0, 1, 2 ... The partition count of a topic must never change:
  that would move keys to other partitions and break their order.
- A consumer is a member of a group. The group splits the partitions of its topics among its live members
  (a member that joins or leaves makes the group rebalance) and keeps, per partition, the committed offset:
  the next record the group has not finished with. A group without a commit on a partition starts at its
  earliest record.
- Delivery to a group is at-least-once: a member commits a batch only after processing it; records it
  received but did not commit (it crashed, closed, or lost the partition in a rebalance) are delivered again
  to whichever member owns the partition next. Consumers must therefore be idempotent (the store worker is,
  on ``(conversation, seq)``). Nothing is delivered twice to a group that commits every batch before a
  rebalance.

Not guaranteed: order across keys that share a partition beyond publish order, order across partitions,
and anything about records published to a topic ``ensure_topic`` did not create.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class QueueError(Exception):
    """A queue operation failed; ``retryable`` says whether trying again later may succeed."""

    retryable = True


class PublishFailed(QueueError):
    """The record was not acknowledged (broker unreachable past the timeout, producer closed or overloaded).
    It may or may not have been stored: a retry can store it twice, which consumers tolerate."""


class CommitFailed(QueueError):
    """The batch's offsets were not committed: the group rebalanced since the batch was fetched, or the broker
    did not answer in time. Its records will be delivered again, to this member or another; not fatal."""


class Position(NamedTuple):
    """Where a record is stored: the partition of its topic and its offset there."""

    partition: int
    offset: int


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()  # Kafka record headers: a sampled send's W3C trace context


class Batch:
    """Records fetched by one consumer, grouped by partition, each partition's records in offset order."""

    __slots__ = ("_commit", "records")

    def __init__(self, records: Sequence[Record], commit: Callable[[dict[TopicPartition, int]], Awaitable[None]]):
        self.records = records
        self._commit = commit

    def __len__(self) -> int:
        return len(self.records)

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition in the batch, the offset after its last record (what ``commit`` stores)."""
        offsets: dict[TopicPartition, int] = {}
        for record in self.records:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        return offsets

    async def commit(self) -> None:
        """Commit, for the group, every offset up to and including this batch's records (call it once they
        are processed). Raises ``CommitFailed`` when the group rebalanced meanwhile or the broker did not
        answer; committing an empty batch does nothing."""
        offsets = self.next_offsets()
        if offsets:
            await self._commit(offsets)


class Producer(Protocol):
    async def start(self) -> None:
        """Connect; ``publish`` may be called only after this returns."""
        ...

    def publish(self, topic: str, key: str, value: bytes) -> Awaitable[Position]:
        """Queue the record at once and return an awaitable that completes with its position when it is
        durably stored (Kafka: acknowledged with acks=all), or fails with ``PublishFailed``. Records with one
        key are stored in the order of the ``publish`` calls (not of the awaits). Cancelling the awaitable
        does not withdraw the record: it may still be stored."""
        ...

    async def partition_for(self, topic: str, key: str) -> int:
        """The partition ``publish`` stores ``key``'s records in: the same in every process."""
        ...

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition of ``topic``, the offset the next record will get: every record below it is stored.
        Grows only; a record whose ``publish`` completed is below it."""
        ...

    async def close(self) -> None:
        """Wait (a bounded time) for queued records to be acknowledged, fail the rest with ``PublishFailed``
        and disconnect. Idempotent."""
        ...


class Consumer(Protocol):
    """A member of one consumer group over fixed topics (both given when it is built)."""

    async def start(self) -> None:
        """Join the group. Partitions are assigned in the background; ``assignment`` tells when."""
        ...

    def batches(self, max_records: int, timeout_s: float) -> AsyncIterator[Batch]:
        """Yield batches of 1..``max_records`` records from this member's partitions as they arrive, each
        continuing after the previous one (whether or not it was committed); when nothing arrives for
        ``timeout_s`` yield an empty batch, so a worker can flush or notice shutdown. After a rebalance each
        partition resumes at the group's committed offset. Ends when the consumer is closed."""
        ...

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member owns now (empty until the group assigned them)."""
        ...

    async def committed(self, topic: str) -> dict[int, int]:
        """The group's committed offset per partition of ``topic``; partitions never committed are absent."""
        ...

    async def close(self) -> None:
        """Leave the group without committing anything: records delivered but not committed go to the
        partitions' next owners. Ends ``batches``. Idempotent."""
        ...


class QueueAdmin(Protocol):
    async def start(self) -> None: ...

    async def ensure_topic(self, topic: str, partitions: int) -> int:
        """Create ``topic`` with ``partitions`` partitions unless it exists; return its partition count (an
        existing topic keeps its own). Safe to call from several processes at once."""
        ...

    async def close(self) -> None: ...


@functools.lru_cache(maxsize=1 << 16)
def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: the positive murmur2 hash of the key modulo the partition count. Cached (the
    keys are conversation ids, which repeat): murmur2 in Python costs ~5 µs, on every publish of the send path."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2(data: bytes) -> int:
    """MurmurHash2 as Kafka's Java client computes it (``Utils.murmur2``), as an unsigned 32-bit value."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    extra = length - tail
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h
