"""Kafka durable queue (distributed), on aiokafka. URL: ``kafka://host:port[,host:port...][?option=value...]``
with options named as the fields of ``KafkaConfig`` (``kafka://k1:9092,k2:9092?linger_ms=2``).

Producing: ``publish`` only queues; one sender task hands the queue to aiokafka in call order, with the
partition computed by ``key_partition`` (the same murmur2 as aiokafka's default partitioner, so
``partition_for`` is exact). A topic's partition count is read once; while it is being read (a metadata wait
of up to ``request_timeout_ms``), that topic's records wait aside, in order, and other topics' records go on.
aiokafka batches records per partition (up to ``max_batch_size``; records queued while a request is in flight go
in the next one) and keeps one request in flight per broker, so a key's records are stored in publish order.
acks=all: a publish completes once every in-sync replica has the record. The idempotent producer is off
(``enable_idempotence`` fails against some Kafka-protocol brokers, tansu among them): a retried batch can be
stored twice, which consumers tolerate anyway (at-least-once).

Consuming: group membership, heartbeats and fetching are aiokafka's; auto-commit is off and offsets are
committed by ``Batch.commit`` only. A new group starts at the earliest offset. Rebalancing is Kafka's eager
protocol: a join or leave revokes every partition, and each resumes at the committed offset.

Replication: topics are created with ``replication_factor`` replicas (1 by default, for a single broker);
a production cluster wants 3, with ``min.insync.replicas=2`` on the broker for acks=all to mean two copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ConsumerStoppedError, KafkaError
from aiokafka.protocol.fetch import FetchRequest

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
from flare_im.observability.stats import Histogram

log = logging.getLogger(__name__)

_Record = tuple[str, bytes, bytes, "asyncio.Future[Position]", float, Any]  # topic, key, value, stored, t0, headers

# Kafka protocol error codes
_OFFSET_OUT_OF_RANGE = 1
_TOPIC_ALREADY_EXISTS = 36
_LEADER_BACKOFF_S = 0.1


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"  # host:port[,host:port]
    client_id: str = "flare"
    # producer
    # How long a batch waits for more records. 0: aiokafka keeps one request in flight per broker, so records
    # published meanwhile form the next batch anyway, and a sender awaiting its ack gains nothing from waiting
    # (bench/kafka_publish.py, 200 publishers on tansu: 50-65k acks/s at 0 ms, 37-40k/s at 2 ms).
    linger_ms: int = 0
    max_batch_size: int = 256 * 1024  # bytes per partition batch
    request_timeout_ms: int = 30_000  # a publish not acknowledged by then fails
    max_pending: int = 100_000  # records queued by publish and not yet handed to aiokafka; beyond, publish fails
    close_timeout_s: float = 10.0  # how long close waits for queued records to be handed over
    leader_wait_s: float = 10.0  # reading end offsets, how long a partition may be without a leader
    # consumer
    session_timeout_ms: int = 10_000  # a member silent this long is dropped; a join waits about half of it
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 300_000  # a member not asking for a batch this long is dropped
    fetch_max_wait_ms: int = 100  # how long the broker holds a fetch that found nothing
    max_partition_fetch_bytes: int = 1024 * 1024
    commit_timeout_s: float = 10.0
    # admin
    replication_factor: int = 1


def kafka_config_from_url(url: str) -> KafkaConfig:
    """``kafka://host:port[,host:port][?field=value&...]`` -> KafkaConfig (fields as named there)."""
    scheme, sep, rest = url.partition("://")
    if scheme != "kafka" or not sep:
        raise ValueError(f"not a kafka:// URL: {url!r}")
    hosts, _, query = rest.partition("?")
    hosts = hosts.rstrip("/")
    if not hosts or any(not host.rpartition(":")[2].isdigit() for host in hosts.split(",")):
        raise ValueError(f"a kafka:// URL lists host:port pairs separated by commas: {url!r}")
    defaults = KafkaConfig()
    options: dict[str, Any] = {}
    for name, text in parse_qsl(query, keep_blank_values=True):
        if name not in {field.name for field in dataclasses.fields(KafkaConfig)} or name == "bootstrap_servers":
            raise ValueError(f"unknown kafka:// URL option {name!r}")
        options[name] = type(getattr(defaults, name))(text)
    return KafkaConfig(bootstrap_servers=hosts, **options)


class KafkaQueueAdmin:
    def __init__(self, config: KafkaConfig, *, metadata_wait_s: float = 10.0) -> None:
        self._config = config
        self._metadata_wait_s = metadata_wait_s
        self._admin: Any = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self._config.bootstrap_servers,
            client_id=self._config.client_id,
            request_timeout_ms=self._config.request_timeout_ms,
        )
        await self._admin.start()

    async def ensure_topic(self, topic: str, partitions: int) -> int:
        if partitions < 1:
            raise ValueError(f"a topic needs at least one partition, not {partitions}")
        try:
            response = await self._admin.create_topics([NewTopic(topic, partitions, self._config.replication_factor)])
        except KafkaError as exc:
            raise QueueError(f"creating topic {topic!r} failed: {exc}") from exc
        for entry in response.topic_errors:  # (topic, error code[, message]) by protocol version
            if entry[1] not in (0, _TOPIC_ALREADY_EXISTS):
                raise QueueError(f"creating topic {topic!r} failed: error {entry[1]} {entry[2:]}")
        return await self._partition_count(topic)

    async def _partition_count(self, topic: str) -> int:
        # A topic just created reaches every broker's metadata a little later.
        async with asyncio.timeout(self._metadata_wait_s):
            while True:
                described = await self._admin.describe_topics([topic])
                if described and described[0]["error_code"] == 0 and described[0]["partitions"]:
                    return len(described[0]["partitions"])
                await asyncio.sleep(0.05)

    async def delete_topics(self, topics: Sequence[str]) -> None:
        """Delete ``topics`` (test cleanup; not part of the port)."""
        await self._admin.delete_topics(list(topics))

    async def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()


class KafkaProducer:
    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._producer: Any = None
        self._seen_ends: dict[TopicPartition, int] = {}
        self._pending: deque[_Record] = deque()
        self._queued = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._partitions: dict[str, int] = {}  # topic -> partition count (never changes)
        self._parked: dict[str, list[_Record]] = {}  # topic whose count is being read -> its records, in order
        self._readers: set[asyncio.Task[None]] = set()  # reading a parked topic's partition count
        self._closed = False
        self.produce_seconds = Histogram()  # publish to the broker's acks=all answer (read by /metrics)

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._config.bootstrap_servers,
            client_id=self._config.client_id,
            acks="all",
            enable_idempotence=False,
            linger_ms=self._config.linger_ms,
            max_batch_size=self._config.max_batch_size,
            request_timeout_ms=self._config.request_timeout_ms,
        )
        await self._producer.start()
        self._sender = asyncio.get_running_loop().create_task(self._send_loop(), name="kafka-producer-sender")

    def publish(self, topic: str, key: str, value: bytes) -> Awaitable[Position]:
        stored: asyncio.Future[Position] = asyncio.get_running_loop().create_future()
        if self._closed or self._sender is None:
            stored.set_exception(PublishFailed("producer closed" if self._closed else "producer not started"))
        elif len(self._pending) >= self._config.max_pending:
            stored.set_exception(PublishFailed(f"{len(self._pending)} records already queued (max_pending)"))
        else:
            # Tracing on: the publishing span's context rides in the record's headers (tracing.py).
            headers = tracing.kafka_headers() if tracing.ENABLED else None
            self._pending.append((topic, key.encode(), value, stored, time.perf_counter(), headers))
            self._queued.set()
        return stored

    async def _send_loop(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                if self._closed and not self._parked:
                    return
                self._queued.clear()
                await self._queued.wait()
                continue
            record = pending.popleft()
            topic, key, value, stored, started, headers = record
            count = self._partitions.get(topic)
            if count is None or topic in self._parked:
                self._park(record)
                continue
            try:
                # Waits only when the partition's batch is full: aiokafka's backpressure.
                acked = await self._producer.send(
                    topic, value, key=key, partition=key_partition(key, count), headers=headers
                )
            except asyncio.CancelledError:  # close gave up waiting: this record was not handed over
                _fail(stored, PublishFailed("producer closed"))
                raise
            except Exception as exc:  # the sender must outlive any failure: later records still go
                _fail(stored, exc)
                continue
            acked.add_done_callback(functools.partial(_settle, stored, started, self.produce_seconds))

    def _park(self, record: _Record) -> None:
        """Set ``record`` aside until its topic's partition count is known; the first one parked reads it."""
        topic = record[0]
        parked = self._parked.get(topic)
        if parked is not None:
            parked.append(record)
            return
        self._parked[topic] = [record]
        task = asyncio.get_running_loop().create_task(self._unpark(topic), name=f"kafka-partitions-{topic}")
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _unpark(self, topic: str) -> None:
        try:
            await self._partition_count(topic)
        except Exception as exc:
            for record in self._parked.pop(topic):
                _fail(record[3], exc)
            self._queued.set()  # a closing sender may be waiting for this topic
            return
        # Ahead of what was queued since: every later record of this topic was parked behind these.
        self._pending.extendleft(reversed(self._parked.pop(topic)))
        self._queued.set()

    async def _partition_count(self, topic: str) -> int:
        partitions = await self._producer.partitions_for(topic)
        self._partitions[topic] = len(partitions)
        return len(partitions)

    async def partition_for(self, topic: str, key: str) -> int:
        count = self._partitions.get(topic) or await self._partition_count(topic)
        return key_partition(key.encode(), count)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        # The high watermark a fetch reports: the offset below which every record is on all in-sync replicas,
        # which is what acks=all acknowledged. Not ListOffsets: tansu answers that with the base offset of the
        # partition's last batch, plus one. Each fetch starts at the last end seen, so it carries little data.
        count = self._partitions.get(topic) or await self._partition_count(topic)
        client = self._producer.client
        by_leader: dict[int, list[int]] = defaultdict(list)
        for partition in range(count):
            by_leader[await self._leader(topic, partition)].append(partition)
        ends: dict[int, int] = {}
        for leader, partitions in by_leader.items():
            for attempt in range(2):
                start = {p: 0 if attempt else self._seen_ends.get(TopicPartition(topic, p), 0) for p in partitions}
                # max wait 1 ms, not 0: tansu answers a 0 ms fetch with no partitions at all
                request = FetchRequest(1, 0, 1, 0, [(topic, [(p, start[p], 1) for p in partitions])])
                try:
                    response = await client.send(leader, request)
                except KafkaError as exc:
                    raise QueueError(f"end offsets of {topic!r}: {exc!r}") from exc
                errors = {}
                for _, answers in response.topics:
                    for partition, error, highwater, *_ in answers:
                        if error:
                            errors[partition] = error
                        else:
                            ends[partition] = highwater
                            self._seen_ends[TopicPartition(topic, partition)] = highwater
                # A topic deleted and made again starts below the last end seen: ask from 0 once.
                if not errors or attempt or set(errors.values()) != {_OFFSET_OUT_OF_RANGE}:
                    break
                partitions = list(errors)
            if errors:
                raise QueueError(f"end offsets of {topic!r}: error codes by partition {errors}")
        return dict(sorted(ends.items()))

    async def _leader(self, topic: str, partition: int) -> int:
        # A partition can be without a leader for a moment (an election; tansu under load answers a metadata
        # request so now and then): ask again until leader_wait_s, as aiokafka's own sender does.
        client = self._producer.client
        tp = KafkaTopicPartition(topic, partition)
        deadline = time.monotonic() + self._config.leader_wait_s
        while True:
            leader = client.cluster.leader_for_partition(tp)
            if leader is not None and leader >= 0:
                return int(leader)
            if time.monotonic() >= deadline:
                raise QueueError(
                    f"partition {partition} of {topic!r} has had no leader for {self._config.leader_wait_s} s"
                )
            await client.force_metadata_update()
            if (leader := client.cluster.leader_for_partition(tp)) is None or leader < 0:
                await asyncio.sleep(_LEADER_BACKOFF_S)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queued.set()  # the sender hands over what is queued, then returns
        if self._sender is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), self._config.close_timeout_s)
            except TimeoutError:
                self._sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sender
                log.warning("kafka producer: closed with %d records not handed over", len(self._pending))
            for reader in list(self._readers):
                reader.cancel()
            await asyncio.gather(*self._readers, return_exceptions=True)
            for parked in self._parked.values():
                self._pending.extend(parked)
            self._parked.clear()
            while self._pending:
                _fail(self._pending.popleft()[3], PublishFailed("producer closed"))
        if self._producer is not None:
            await self._producer.stop()  # waits for the acks of what aiokafka holds (up to request_timeout_ms)


def _settle(
    stored: asyncio.Future[Position], started: float, produce_seconds: Histogram, acked: asyncio.Future[Any]
) -> None:
    if stored.done():  # the publisher stopped waiting
        return
    if acked.cancelled():
        stored.set_exception(PublishFailed("publish cancelled"))
    elif (exc := acked.exception()) is not None:
        _fail(stored, exc)
    else:
        metadata = acked.result()
        produce_seconds.observe(time.perf_counter() - started)
        stored.set_result(Position(metadata.partition, metadata.offset))


def _fail(stored: asyncio.Future[Position], exc: BaseException) -> None:
    if stored.done():
        return
    if isinstance(exc, PublishFailed):
        stored.set_exception(exc)
        return
    failure = PublishFailed(f"not acknowledged: {exc!r}")
    failure.__cause__ = exc
    stored.set_exception(failure)


class KafkaConsumer:
    def __init__(self, config: KafkaConfig, topics: Sequence[str], group: str) -> None:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        self._config = config
        self._topics = tuple(topics)
        self._group = group
        self._consumer: Any = None
        self._closed = False
        self._consumed: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset this member reads

    async def start(self) -> None:
        if self._closed:
            raise QueueError("consumer closed")
        config = self._config
        self._consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=config.bootstrap_servers,
            client_id=config.client_id,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            fetch_max_wait_ms=config.fetch_max_wait_ms,
            max_partition_fetch_bytes=config.max_partition_fetch_bytes,
            request_timeout_ms=config.request_timeout_ms,
        )
        try:
            await self._consumer.start()
        except KafkaError as exc:  # a broker not reachable: the caller may try again, with a new client
            consumer, self._consumer = self._consumer, None
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise QueueError(f"joining consumer group {self._group!r} failed: {exc}") from exc

    async def batches(self, max_records: int, timeout_s: float) -> AsyncIterator[Batch]:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, not {max_records}")
        timeout_ms = max(1, round(timeout_s * 1000))
        while not self._closed:
            try:
                fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
            except ConsumerStoppedError:
                return
            if self._closed:
                return
            records = [
                Record(
                    tp.topic, tp.partition, r.offset, r.key.decode() if r.key is not None else "", r.value, r.headers
                )
                for tp in sorted(fetched)
                for r in fetched[tp]
            ]
            for tp, fetched_records in fetched.items():
                if fetched_records:
                    self._consumed[(tp.topic, tp.partition)] = fetched_records[-1].offset + 1
            yield Batch(records, self._commit)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self._closed:
            raise CommitFailed("consumer closed: its partitions belong to other members now")
        request = {KafkaTopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()}
        try:
            await asyncio.wait_for(self._consumer.commit(request), self._config.commit_timeout_s)
        except (KafkaError, TimeoutError) as exc:  # CommitFailedError, IllegalStateError (not assigned) ...
            raise CommitFailed(f"commit of {len(request)} partitions failed: {exc!r}") from exc

    def lag(self) -> dict[tuple[str, int], int]:
        """Records behind the end of each assigned partition, by (topic, partition), as of the last fetch
        (the broker's high watermark there); partitions without a fetch answer yet are left out."""
        if self._consumer is None or self._closed:
            return {}
        out: dict[tuple[str, int], int] = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is not None:
                # No record from it yet while the broker answered for it: this member reads at its end.
                out[(tp.topic, tp.partition)] = max(0, end - self._consumed.get((tp.topic, tp.partition), end))
        return out

    def assignment(self) -> frozenset[TopicPartition]:
        if self._consumer is None or self._closed:
            return frozenset()
        return frozenset(TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment())

    async def committed(self, topic: str) -> dict[int, int]:
        return await _committed(self._consumer, topic)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._consumer is not None:
            await self._consumer.stop()  # leaves the group: the partitions go to the other members at once


class KafkaGroupOffsets:
    """Reads a consumer group's committed offsets without joining the group (a gateway node asking how far
    the store worker is). aiokafka's admin call for this cannot decode tansu's reply; a consumer that never
    subscribes asks the group coordinator directly and takes no partitions."""

    def __init__(self, config: KafkaConfig, group: str) -> None:
        self._config = config
        self._group = group
        self._consumer: Any = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._config.bootstrap_servers,
            client_id=f"{self._config.client_id}-offsets",
            group_id=self._group,
            enable_auto_commit=False,
        )
        await self._consumer.start()

    async def committed(self, topic: str) -> dict[int, int]:
        return await _committed(self._consumer, topic)

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


async def _committed(consumer: Any, topic: str) -> dict[int, int]:
    """The committed offset per partition of ``topic`` for ``consumer``'s group (never-committed ones absent)."""
    partitions = consumer.partitions_for_topic(topic)
    if partitions is None:
        await consumer.topics()  # refreshes the metadata
        partitions = consumer.partitions_for_topic(topic) or set()
    offsets: dict[int, int] = {}
    for partition in sorted(partitions):
        try:
            offset = await consumer.committed(KafkaTopicPartition(topic, partition))
        except KafkaError as exc:
            raise QueueError(f"committed offsets of {topic!r}: {exc}") from exc
        if offset is not None:
            offsets[partition] = int(offset)
    return offsets
