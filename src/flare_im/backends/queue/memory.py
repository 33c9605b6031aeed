"""In-process durable queue (embedded mode, and the twin of the Kafka one in the contract tests).

Producers, consumers and admins built on one ``MemoryQueueBroker`` share it the way processes share a Kafka
cluster: partitioned topics, consumer groups, committed offsets. "Durable" here means "stored in this
process": a record is stored when ``publish`` returns (the embedded mode publishes after its SQLite commit,
which is the durable step). Groups rebalance at once when a member starts or closes: as Kafka's eager
protocol does, every member then resumes each partition it owns at the group's committed offset.

Bounds: each partition keeps its newest ``max_records_per_partition`` records (up to an eighth more between
trims); older ones are dropped the way Kafka's retention drops them, and a member whose position fell below
the oldest kept record resumes there (``MemoryQueueBroker.skipped`` counts the records it never saw).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from itertools import count

from flare_im.backends.queue.base import (
    Batch,
    CommitFailed,
    Position,
    PublishFailed,
    QueueError,
    Record,
    TopicPartition,
    key_partition,
)
from flare_im.observability import tracing


@dataclass(frozen=True, slots=True)
class MemoryQueueConfig:
    max_records_per_partition: int = 1_000_000


class _PartitionLog:
    __slots__ = ("records", "start")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.start = 0  # offset of records[0]

    @property
    def end(self) -> int:
        return self.start + len(self.records)


class _Group:
    __slots__ = ("committed", "members", "owners")

    def __init__(self) -> None:
        self.members: list[MemoryConsumer] = []  # in join order
        self.committed: dict[TopicPartition, int] = {}
        self.owners: dict[TopicPartition, MemoryConsumer] = {}


class MemoryQueueBroker:
    """What the adapters built on one broker share: topics, their records, and the consumer groups."""

    def __init__(self, config: MemoryQueueConfig | None = None) -> None:
        self._max_records = (config or MemoryQueueConfig()).max_records_per_partition
        self.topics: dict[str, list[_PartitionLog]] = {}
        self.groups: dict[str, _Group] = {}
        self.skipped = 0  # records dropped by retention before a group that wanted them read them

    def create_topic(self, topic: str, partitions: int) -> int:
        if partitions < 1:
            raise ValueError(f"a topic needs at least one partition, not {partitions}")
        logs = self.topics.get(topic)
        if logs is None:
            logs = self.topics[topic] = [_PartitionLog() for _ in range(partitions)]
            for group in self.groups.values():
                if any(topic in member.topics for member in group.members):
                    self._rebalance(group)
        return len(logs)

    def logs(self, topic: str) -> list[_PartitionLog]:
        try:
            return self.topics[topic]
        except KeyError:
            raise QueueError(f"unknown topic {topic!r}: create it with ensure_topic first") from None

    def append(self, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> Position:
        logs = self.logs(topic)
        partition = key_partition(key.encode(), len(logs))
        log = logs[partition]
        offset = log.end
        log.records.append(Record(topic, partition, offset, key, value, headers))
        excess = len(log.records) - self._max_records
        if excess > self._max_records // 8:  # trim in chunks: a list drops its head in one step
            del log.records[:excess]
            log.start += excess
        for group in self.groups.values():
            owner = group.owners.get(TopicPartition(topic, partition))
            if owner is not None:
                owner.wake()
        return Position(partition, offset)

    def join(self, group_id: str, member: MemoryConsumer) -> None:
        group = self.groups.setdefault(group_id, _Group())
        group.members.append(member)
        self._rebalance(group)

    def leave(self, group_id: str, member: MemoryConsumer) -> None:
        group = self.groups[group_id]
        group.members.remove(member)
        self._rebalance(group)

    def commit(self, group_id: str, member: MemoryConsumer, offsets: dict[TopicPartition, int]) -> None:
        group = self.groups[group_id]
        lost = [tp for tp in offsets if group.owners.get(tp) is not member]
        if lost:
            raise CommitFailed(f"group {group_id!r} rebalanced: this member no longer owns {sorted(lost)}")
        group.committed.update(offsets)

    def _rebalance(self, group: _Group) -> None:
        """Round robin over the partitions in (topic, partition) order, among the members subscribed to each
        topic, as Kafka's round-robin assignor; every member restarts at the committed offsets."""
        group.owners = {}
        assigned: dict[int, list[TopicPartition]] = {id(member): [] for member in group.members}
        turn = count()
        for topic in sorted({topic for member in group.members for topic in member.topics}):
            subscribers = [member for member in group.members if topic in member.topics]
            for partition in range(len(self.topics.get(topic, ()))):
                owner = subscribers[next(turn) % len(subscribers)]
                tp = TopicPartition(topic, partition)
                group.owners[tp] = owner
                assigned[id(owner)].append(tp)
        for member in group.members:
            positions = {tp: group.committed.get(tp, 0) for tp in assigned[id(member)]}
            member.assign(positions)

    def read(self, tp: TopicPartition, offset: int, limit: int) -> tuple[list[Record], int]:
        """Up to ``limit`` records of ``tp`` from ``offset`` (or from the oldest kept one), and the next offset."""
        log = self.topics[tp.topic][tp.partition]
        if offset < log.start:
            self.skipped += log.start - offset
            offset = log.start
        first = offset - log.start
        records = log.records[first : first + limit]
        return records, offset + len(records)


class MemoryQueueAdmin:
    def __init__(self, broker: MemoryQueueBroker) -> None:
        self._broker = broker

    async def start(self) -> None:
        pass

    async def ensure_topic(self, topic: str, partitions: int) -> int:
        return self._broker.create_topic(topic, partitions)

    async def close(self) -> None:
        pass


class MemoryProducer:
    def __init__(self, broker: MemoryQueueBroker) -> None:
        self._broker = broker
        self._closed = False

    async def start(self) -> None:
        pass

    def publish(self, topic: str, key: str, value: bytes) -> Awaitable[Position]:
        stored: asyncio.Future[Position] = asyncio.get_running_loop().create_future()
        if self._closed:
            stored.set_exception(PublishFailed("producer closed"))
            return stored
        try:
            if tracing.ENABLED:  # the publishing span's context rides in the record, as over Kafka (tracing.py)
                stored.set_result(self._broker.append(topic, key, value, tracing.kafka_headers() or ()))
            else:
                stored.set_result(self._broker.append(topic, key, value))
        except QueueError as exc:
            stored.set_exception(PublishFailed(str(exc)))
        return stored

    async def partition_for(self, topic: str, key: str) -> int:
        return key_partition(key.encode(), len(self._broker.logs(topic)))

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return {partition: log.end for partition, log in enumerate(self._broker.logs(topic))}

    async def close(self) -> None:
        self._closed = True


class MemoryConsumer:
    def __init__(self, broker: MemoryQueueBroker, topics: Sequence[str], group: str) -> None:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        self.topics = frozenset(topics)
        self._broker = broker
        self._group = group
        self._positions: dict[TopicPartition, int] = {}  # owned partition -> next offset to deliver
        self._turn = 0  # which owned partition a batch starts with, so none starves
        self._woken = asyncio.Event()
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise QueueError("consumer closed")
        if not self._started:
            self._started = True
            self._broker.join(self._group, self)

    def assign(self, positions: dict[TopicPartition, int]) -> None:
        """Called by the broker on every rebalance of the group."""
        self._positions = positions
        self.wake()

    def wake(self) -> None:
        self._woken.set()

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._positions)

    async def batches(self, max_records: int, timeout_s: float) -> AsyncIterator[Batch]:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, not {max_records}")
        loop = asyncio.get_running_loop()
        while not self._closed:
            records = self._take(max_records)
            if records:
                yield Batch(records, self._commit)
                continue
            deadline = loop.time() + timeout_s
            while not self._closed and not self._available():
                self._woken.clear()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._woken.wait(), remaining)
            if not self._closed and not self._available():
                yield Batch((), self._commit)

    def _available(self) -> bool:
        logs = self._broker.topics
        return any(offset < logs[tp.topic][tp.partition].end for tp, offset in self._positions.items())

    def _take(self, max_records: int) -> list[Record]:
        owned = sorted(self._positions)
        if not owned:
            return []
        self._turn = (self._turn + 1) % len(owned)
        taken: list[Record] = []
        for tp in owned[self._turn :] + owned[: self._turn]:
            records, self._positions[tp] = self._broker.read(tp, self._positions[tp], max_records - len(taken))
            taken.extend(records)
            if len(taken) >= max_records:
                break
        return taken

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self._closed:
            raise CommitFailed("consumer closed: its partitions belong to other members now")
        self._broker.commit(self._group, self, offsets)

    async def committed(self, topic: str) -> dict[int, int]:
        group = self._broker.groups.get(self._group)
        if group is None:
            return {}
        return {tp.partition: offset for tp, offset in group.committed.items() if tp.topic == topic}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._woken.set()
        if self._started:
            self._broker.leave(self._group, self)
