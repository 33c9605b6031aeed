"""Contract of the durable queue port (src/flare_im/backends/queue/base.py), for every backend.

``queue_backend`` opens started producers and consumers over one broker and makes topics and group names
unique to the test (tests/contract/conftest.py). Kafka group joins take about a second on tansu, so tests
that need several members wait for the group's assignment instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from flare_im.backends.queue.base import (
    Batch,
    CommitFailed,
    Consumer,
    Position,
    Producer,
    PublishFailed,
    QueueAdmin,
    Record,
    TopicPartition,
    key_partition,
)

WAIT_S = 15.0  # upper bound for anything a test waits for; the Kafka suite as a whole runs in ~20 s


async def until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the conditions read consumer state that has no event
            await asyncio.sleep(0.02)


async def take(consumer: Consumer, count: int, *, max_records: int = 100, commit: bool = False) -> list[Record]:
    """Records from ``consumer`` until it has ``count`` of them (committing each batch if asked)."""
    got: list[Record] = []
    async with asyncio.timeout(WAIT_S), contextlib.aclosing(consumer.batches(max_records, 0.05)) as batches:
        async for batch in batches:
            assert len(batch) <= max_records
            got.extend(batch.records)
            if commit:
                await batch.commit()
            if len(got) >= count:
                break
    return got


async def take_distinct(consumer: Consumer, count: int) -> list[Record]:
    """Records from ``consumer`` until ``count`` distinct ones came (at-least-once: some may come twice)."""
    got: list[Record] = []
    seen: set[tuple[int, int]] = set()
    async with asyncio.timeout(WAIT_S), contextlib.aclosing(consumer.batches(100, 0.05)) as batches:
        async for batch in batches:
            got.extend(batch.records)
            seen.update((r.partition, r.offset) for r in batch.records)
            if len(seen) >= count:
                break
    return got


async def publish_all(producer: Producer, topic: str, items: list[tuple[str, bytes]]) -> list[Position]:
    """Publishes every (key, value) in order without waiting in between, then waits for all acks."""
    pending = [producer.publish(topic, key, value) for key, value in items]
    return list(await asyncio.gather(*pending))


def by_key(records: list[Record]) -> dict[str, list[bytes]]:
    values: dict[str, list[bytes]] = defaultdict(list)
    for record in records:
        values[record.key].append(record.value)
    return values


def numbered(keys: int, per_key: int) -> list[tuple[str, bytes]]:
    """``per_key`` records for each of ``keys`` keys, interleaved: (key i, b"i:n")."""
    return [(f"conv-{k}", f"{k}:{n}".encode()) for n in range(per_key) for k in range(keys)]


# ---------------------------------------------------------------- topics and partitioning


async def test_ensure_topic_is_idempotent_and_keeps_the_first_partition_count(queue_backend: Any) -> None:
    admin: QueueAdmin = await queue_backend.admin()
    name = queue_backend.topic_name()
    assert await admin.ensure_topic(name, 3) == 3
    assert await admin.ensure_topic(name, 3) == 3
    assert await admin.ensure_topic(name, 8) == 3  # an existing topic keeps its partitions
    counts = await asyncio.gather(*(admin.ensure_topic(queue_backend.topic_name(), 2) for _ in range(5)))
    assert counts == [2] * 5


async def test_a_key_always_maps_to_the_same_partition_in_every_producer(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=6)
    first: Producer = await queue_backend.producer()
    second: Producer = await queue_backend.producer()
    keys = [f"g:{i}" for i in range(60)] + ["d:alice:bob", "s:system", "", "ключ"]
    partitions = {key: await first.partition_for(topic, key) for key in keys}
    assert {key: await second.partition_for(topic, key) for key in keys} == partitions
    # Kafka's default partitioner: the same partition whichever backend or process computes it.
    assert partitions == {key: key_partition(key.encode(), 6) for key in keys}
    assert len(set(partitions.values())) == 6  # 64 keys spread over every partition
    positions = await publish_all(first, topic, [(key, b"x") for key in keys] + [(key, b"y") for key in keys])
    for i, key in enumerate(keys):
        assert positions[i].partition == positions[i + len(keys)].partition == partitions[key]


async def test_records_of_a_key_are_stored_in_publish_order(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=4)
    producer: Producer = await queue_backend.producer()
    items = numbered(keys=20, per_key=25)
    positions = await publish_all(producer, topic, items)
    offsets: dict[str, list[int]] = defaultdict(list)
    for (key, _), position in zip(items, positions, strict=True):
        offsets[key].append(position.offset)
    assert all(found == sorted(found) and len(set(found)) == len(found) for found in offsets.values())
    consumer: Consumer = await queue_backend.consumer([topic], queue_backend.group())
    records = await take(consumer, len(items))
    assert by_key(records) == {f"conv-{k}": [f"{k}:{n}".encode() for n in range(25)] for k in range(20)}
    for record in records:
        assert record.topic == topic
        assert record.partition == key_partition(record.key.encode(), 4)


async def test_a_completed_publish_is_stored_and_counted_in_end_offsets(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=3)
    producer: Producer = await queue_backend.producer()
    assert await producer.end_offsets(topic) == {0: 0, 1: 0, 2: 0}
    position = await producer.publish(topic, "d:a:b", b"hello")
    assert position == Position(await producer.partition_for(topic, "d:a:b"), 0)
    ends = await producer.end_offsets(topic)
    assert ends == {p: (1 if p == position.partition else 0) for p in range(3)}
    consumer: Consumer = await queue_backend.consumer([topic], queue_backend.group())
    [record] = await take(consumer, 1)
    assert record == Record(topic, position.partition, 0, "d:a:b", b"hello")


async def test_end_offsets_grow_with_every_acknowledged_record(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=2)
    producer: Producer = await queue_backend.producer()
    before = await producer.end_offsets(topic)
    positions = await publish_all(producer, topic, numbered(keys=8, per_key=10))
    after = await producer.end_offsets(topic)
    for partition in (0, 1):
        stored = [p.offset for p in positions if p.partition == partition]
        assert after[partition] == before[partition] + len(stored)
        assert all(offset < after[partition] for offset in stored)
    assert sum(after.values()) == 80
    more = await publish_all(producer, topic, numbered(keys=8, per_key=1))
    latest = await producer.end_offsets(topic)
    assert all(latest[p] >= after[p] for p in (0, 1))
    assert sum(latest.values()) == 88
    assert all(p.offset < latest[p.partition] for p in more)


async def test_publish_on_a_closed_producer_fails(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=1)
    producer: Producer = await queue_backend.producer()
    await producer.publish(topic, "k", b"stored")
    await producer.close()
    with pytest.raises(PublishFailed):
        await producer.publish(topic, "k", b"too late")


# ---------------------------------------------------------------- consuming


async def test_batches_are_bounded_ordered_and_commit_their_offsets(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=3)
    producer: Producer = await queue_backend.producer()
    positions = await publish_all(producer, topic, numbered(keys=9, per_key=10))
    group = queue_backend.group()
    consumer: Consumer = await queue_backend.consumer([topic], group)
    assert await consumer.committed(topic) == {}
    got: list[Record] = []
    async with asyncio.timeout(WAIT_S), contextlib.aclosing(consumer.batches(7, 0.05)) as batches:
        async for batch in batches:
            assert len(batch) <= 7
            runs = [
                r.partition
                for i, r in enumerate(batch.records)
                if i == 0 or batch.records[i - 1].partition != r.partition
            ]
            assert len(runs) == len(set(runs))  # grouped by partition
            for record in batch.records:  # each partition in offset order, continuing where it left off
                earlier = [r.offset for r in got if r.partition == record.partition]
                assert record.offset == (earlier[-1] + 1 if earlier else 0)
                got.append(record)
            await batch.commit()
            if len(got) >= 90:
                break
    assert len(got) == 90
    ends = await producer.end_offsets(topic)
    assert await consumer.committed(topic) == {p: ends[p] for p in range(3) if ends[p] > 0}
    assert sorted((r.partition, r.offset) for r in got) == sorted(positions)


async def test_an_empty_batch_after_the_timeout_and_close_ends_the_batches(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=2)
    consumer: Consumer = await queue_backend.consumer([topic], queue_backend.group())
    seen: list[int] = []

    async def worker() -> None:
        async for batch in consumer.batches(10, 0.05):
            seen.append(len(batch))
            await batch.commit()  # an empty batch commits nothing

    task = asyncio.create_task(worker())
    await until(lambda: len(seen) >= 3)
    assert set(seen) == {0}
    await consumer.close()
    async with asyncio.timeout(WAIT_S):
        await task  # the iteration ended


async def test_committed_offsets_survive_a_consumer_restart(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=2)
    producer: Producer = await queue_backend.producer()
    await publish_all(producer, topic, numbered(keys=4, per_key=10))
    group = queue_backend.group()
    first: Consumer = await queue_backend.consumer([topic], group)
    processed = await take(first, 40, max_records=40, commit=True)
    committed = await first.committed(topic)
    assert sum(committed.values()) == 40
    await first.close()

    second: Consumer = await queue_backend.consumer([topic], group)
    assert await second.committed(topic) == committed
    marker = await producer.publish(topic, "conv-0", b"after the restart")
    [record] = await take(second, 1)  # resumes at the committed offsets: nothing processed comes back
    assert (record.partition, record.offset, record.value) == (*marker, b"after the restart")
    assert len(processed) == 40


async def test_uncommitted_records_of_a_closed_member_go_to_another_member(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=4)
    producer: Producer = await queue_backend.producer()
    group = queue_backend.group()
    crashing: Consumer = await queue_backend.consumer([topic], group)
    await until(lambda: len(crashing.assignment()) == 4)
    items = numbered(keys=12, per_key=5)
    await publish_all(producer, topic, items)
    committed_part = await take(crashing, 10, max_records=10, commit=True)
    uncommitted = await take(crashing, len(items) - len(committed_part))  # processed, never committed
    assert len(committed_part) + len(uncommitted) == len(items)

    survivor: Consumer = await queue_backend.consumer([topic], group)
    await crashing.close()  # a crash before commit, as the group sees it
    # The group may rebalance twice (join, then leave): a record can come twice, never not at all.
    redelivered = await take_distinct(survivor, len(uncommitted))
    assert {(r.partition, r.offset) for r in redelivered} == {(r.partition, r.offset) for r in uncommitted}


async def test_partitions_are_split_between_members_and_a_lost_partition_cannot_be_committed(
    queue_backend: Any,
) -> None:
    topic = await queue_backend.topic(partitions=4)
    producer: Producer = await queue_backend.producer()
    group = queue_backend.group()
    first: Consumer = await queue_backend.consumer([topic], group)
    await until(lambda: len(first.assignment()) == 4)
    await publish_all(producer, topic, numbered(keys=16, per_key=2))
    held: list[Batch] = []  # fetched by the first member, never committed
    async with asyncio.timeout(WAIT_S), contextlib.aclosing(first.batches(100, 0.05)) as batches:
        async for batch in batches:
            held.append(batch)
            if sum(map(len, held)) >= 32:
                break

    second: Consumer = await queue_backend.consumer([topic], group)
    every = frozenset(TopicPartition(topic, p) for p in range(4))
    await until(lambda: bool(second.assignment()) and first.assignment() | second.assignment() == every)
    assert first.assignment().isdisjoint(second.assignment())
    assert first.assignment()  # the round-robin split leaves each member some partitions
    lost = every - first.assignment()
    for batch in held:
        if any(TopicPartition(r.topic, r.partition) in lost for r in batch.records):
            with pytest.raises(CommitFailed):
                await batch.commit()
    assert await first.committed(topic) == {}

    # Each member now gets its own partitions, from the first record (nothing was committed).
    await publish_all(producer, topic, [(f"conv-{k}", b"late") for k in range(16)])
    ends = await producer.end_offsets(topic)

    async def own_share(member: Consumer) -> list[Record]:
        return await take(member, sum(ends[tp.partition] for tp in member.assignment()))

    shares = await asyncio.gather(own_share(first), own_share(second))
    for member, share in zip((first, second), shares, strict=True):
        assert {TopicPartition(r.topic, r.partition) for r in share} <= member.assignment()
    assert sorted((r.partition, r.offset) for share in shares for r in share) == sorted(
        (p, offset) for p in range(4) for offset in range(ends[p])
    )


async def test_two_groups_each_see_every_record(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=3)
    producer: Producer = await queue_backend.producer()
    items = numbered(keys=10, per_key=6)
    await publish_all(producer, topic, items)
    store, push = await asyncio.gather(*(queue_backend.consumer([topic], queue_backend.group()) for _ in "ab"))
    for records in await asyncio.gather(take(store, 60, commit=True), take(push, 60)):
        assert len(records) == 60
        assert by_key(records) == by_key([Record(topic, 0, 0, key, value) for key, value in items])


async def test_a_consumer_reads_every_topic_it_subscribed_to(queue_backend: Any) -> None:
    messages = await queue_backend.topic(partitions=2)
    pushes = await queue_backend.topic(partitions=1)
    producer: Producer = await queue_backend.producer()
    await publish_all(producer, messages, numbered(keys=3, per_key=2))
    await publish_all(producer, pushes, numbered(keys=2, per_key=2))
    consumer: Consumer = await queue_backend.consumer([messages, pushes], queue_backend.group())
    records = await take(consumer, 10, commit=True)
    assert sorted((r.topic, r.key, r.value) for r in records) == sorted(
        [(messages, k, v) for k, v in numbered(keys=3, per_key=2)] + [(pushes, k, v) for k, v in numbered(2, 2)]
    )
    assert sum((await consumer.committed(messages)).values()) == 6
    assert await consumer.committed(pushes) == {0: 4}


async def test_a_burst_from_200_publishers_arrives_complete_and_in_key_order(queue_backend: Any) -> None:
    topic = await queue_backend.topic(partitions=8)
    producer: Producer = await queue_backend.producer()
    publishers, per_publisher = 200, 100  # 20,000 records; each publisher is one conversation

    async def publisher(k: int) -> list[Position]:
        positions = []
        for n in range(per_publisher):
            positions.append(await producer.publish(topic, f"g:{k}", f"{k}:{n}".encode()))
        return positions

    acked = await asyncio.gather(*(publisher(k) for k in range(publishers)))
    assert len({p for positions in acked for p in positions}) == publishers * per_publisher
    assert sum((await producer.end_offsets(topic)).values()) == publishers * per_publisher
    consumer: Consumer = await queue_backend.consumer([topic], queue_backend.group())
    records = await take(consumer, publishers * per_publisher, max_records=2000, commit=True)
    assert len(records) == publishers * per_publisher
    assert by_key(records) == {f"g:{k}": [f"{k}:{n}".encode() for n in range(per_publisher)] for k in range(publishers)}
