"""The Kafka producer's sender and a topic whose partition count is slow to read (backends/queue/kafka.py).

The count is read from the broker's metadata the first time a topic is published to; a metadata wait can last up
to ``request_timeout_ms`` (30 s). The node publishes messages and webhook events through one producer: a webhook
topic whose metadata is slow must not hold the messages behind it (a send waits for its message's ack). Here
aiokafka is replaced by a stand-in whose metadata answers when the test says, so every wait is the test's own.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import UnknownTopicOrPartitionError

from flare_im.backends.queue import kafka
from flare_im.backends.queue.base import Position, PublishFailed, QueueError
from flare_im.backends.queue.kafka import KafkaConfig, KafkaProducer


class StandInCluster:
    """aiokafka's cluster metadata: no leader for any partition until ``leaderless_updates`` refreshes are done."""

    def __init__(self) -> None:
        self.leaderless_updates = 0
        self.updates = 0

    def leader_for_partition(self, tp: Any) -> int | None:
        return 0 if self.updates >= self.leaderless_updates else -1


class StandInClient:
    def __init__(self) -> None:
        self.cluster = StandInCluster()
        self.fetches = 0

    async def force_metadata_update(self) -> bool:
        self.cluster.updates += 1
        return True

    async def send(self, node_id: int, request: Any) -> Any:
        self.fetches += 1
        topic, partitions = request.topics[0]
        return SimpleNamespace(topics=[(topic, [(p, 0, 5) for p, *_ in partitions])])


class StandInProducer:
    """What KafkaProducer uses of AIOKafkaProducer; a topic in ``slow`` answers its metadata when its event is
    set, a topic in ``missing`` then has none (aiokafka's error after a metadata wait runs out)."""

    def __init__(self, **_config: Any) -> None:
        self.sent: list[tuple[str, bytes, int]] = []
        self.slow: dict[str, asyncio.Event] = {}
        self.missing: set[str] = set()
        self.metadata_reads: list[str] = []
        self.client = StandInClient()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        self.metadata_reads.append(topic)
        if topic in self.slow:
            await self.slow[topic].wait()
        if topic in self.missing:
            raise UnknownTopicOrPartitionError()
        return {0, 1, 2}

    async def send(self, topic: str, value: bytes, *, key: bytes, partition: int, headers: Any) -> Any:
        self.sent.append((topic, value, partition))
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(SimpleNamespace(partition=partition, offset=len(self.sent) - 1))
        return acked


@pytest.fixture
async def producer(monkeypatch: pytest.MonkeyPatch) -> Any:
    made: list[StandInProducer] = []

    def make(**config: Any) -> StandInProducer:
        made.append(StandInProducer(**config))
        return made[0]

    monkeypatch.setattr(kafka, "AIOKafkaProducer", make)
    p = KafkaProducer(KafkaConfig(close_timeout_s=0.5, leader_wait_s=1.0))
    await p.start()
    yield p, made[0]
    await p.close()


def sent_values(stand_in: StandInProducer, topic: str) -> list[bytes]:
    return [value for t, value, _ in stand_in.sent if t == topic]


async def test_a_topic_whose_metadata_is_slow_does_not_hold_another_topics_records(producer: Any) -> None:
    p, stand_in = producer
    first = await p.publish("messages", "c1", b"m0")  # the messages topic's count is read and kept
    assert first == Position(stand_in.sent[0][2], 0)
    stand_in.slow["webhooks"] = asyncio.Event()
    w1 = asyncio.ensure_future(p.publish("webhooks", "c1", b"w1"))
    m1 = p.publish("messages", "c1", b"m1")
    w2 = asyncio.ensure_future(p.publish("webhooks", "c2", b"w2"))
    await asyncio.wait_for(m1, 1.0)  # not behind the webhook topic's metadata
    m2 = await asyncio.wait_for(p.publish("messages", "c2", b"m2"), 1.0)
    assert m2.offset == 2
    assert not w1.done()
    assert not w2.done()
    assert sent_values(stand_in, "webhooks") == []

    stand_in.slow["webhooks"].set()
    await asyncio.wait_for(asyncio.gather(w1, w2), 1.0)
    assert sent_values(stand_in, "webhooks") == [b"w1", b"w2"]  # in publish order
    assert stand_in.metadata_reads.count("webhooks") == 1  # read once, for both
    assert await p.publish("webhooks", "c3", b"w3") is not None
    assert stand_in.metadata_reads.count("webhooks") == 1  # and kept


async def test_a_topic_without_metadata_fails_its_own_records_only_and_is_read_again_later(producer: Any) -> None:
    p, stand_in = producer
    stand_in.missing.add("gone")
    stand_in.slow["gone"] = asyncio.Event()
    g1 = asyncio.ensure_future(p.publish("gone", "k", b"g1"))
    g2 = asyncio.ensure_future(p.publish("gone", "k", b"g2"))
    await asyncio.wait_for(p.publish("messages", "k", b"m1"), 1.0)
    stand_in.slow["gone"].set()
    for parked in (g1, g2):
        with pytest.raises(PublishFailed) as failed:
            await asyncio.wait_for(parked, 1.0)
        assert isinstance(failed.value.__cause__, UnknownTopicOrPartitionError)
    assert sent_values(stand_in, "gone") == []

    stand_in.missing.clear()  # the topic is there now: the next record reads its count again
    await asyncio.wait_for(p.publish("gone", "k", b"g3"), 1.0)
    assert sent_values(stand_in, "gone") == [b"g3"]
    assert stand_in.metadata_reads.count("gone") == 2


async def test_close_fails_records_still_waiting_for_their_topic_and_returns(producer: Any) -> None:
    p, stand_in = producer
    stand_in.slow["webhooks"] = asyncio.Event()  # never set
    waiting = asyncio.ensure_future(p.publish("webhooks", "k", b"w1"))
    sent = p.publish("messages", "k", b"m1")
    await asyncio.wait_for(sent, 1.0)
    await asyncio.wait_for(p.close(), 5.0)  # close_timeout_s 0.5, then the count read is cancelled
    with pytest.raises(PublishFailed, match="producer closed"):
        await waiting
    assert sent_values(stand_in, "webhooks") == []
    with pytest.raises(PublishFailed, match="producer closed"):
        await p.publish("messages", "k", b"m2")


async def test_end_offsets_wait_out_a_moment_without_a_leader(producer: Any) -> None:
    p, stand_in = producer
    stand_in.client.cluster.leaderless_updates = 3  # three refreshes answer without a leader, then there is one
    assert await asyncio.wait_for(p.end_offsets("messages"), 2.0) == {0: 5, 1: 5, 2: 5}
    assert stand_in.client.cluster.updates == 3


async def test_end_offsets_fail_when_a_partition_stays_without_a_leader(producer: Any) -> None:
    p, stand_in = producer
    stand_in.client.cluster.leaderless_updates = 10**9
    started = asyncio.get_running_loop().time()
    with pytest.raises(QueueError, match=r"has had no leader for 1\.0 s"):
        await asyncio.wait_for(p.end_offsets("messages"), 5.0)
    assert asyncio.get_running_loop().time() - started >= 1.0
    assert 2 <= stand_in.client.cluster.updates <= 15  # asked again, with a pause between
    assert stand_in.client.fetches == 0
