"""A node does not wait for its broadcast consumer to join the group: the join runs in the background, is tried
again when the broker refuses it, and a node that stops meanwhile stops at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flare_im.admin_node import _deliver_broadcasts
from flare_im.backends.queue.base import QueueError
from flare_im.backends.queue.kafka import KafkaConfig, KafkaConsumer
from flare_im.devcluster import free_port


class FlakyConsumer:
    """Refuses ``failures`` joins, then joins; or never finishes joining (``hang``)."""

    def __init__(self, failures: int = 0, hang: bool = False) -> None:
        self.failures = failures
        self.hang = hang
        self.starts = 0
        self.joined = asyncio.Event()

    async def start(self) -> None:
        self.starts += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.starts <= self.failures:
            raise QueueError("broker not reachable")
        self.joined.set()

    async def batches(self, max_records: int, timeout_s: float) -> AsyncIterator[Any]:
        await asyncio.Event().wait()
        yield None  # pragma: no cover - never reached


class RecordingBroadcaster:
    def __init__(self) -> None:
        self.consumers: list[Any] = []

    async def run(self, consumer: Any) -> None:
        self.consumers.append(consumer)


async def test_a_refused_join_is_tried_again_then_delivery_starts(caplog: pytest.LogCaptureFixture) -> None:
    consumer, broadcaster = FlakyConsumer(failures=2), RecordingBroadcaster()
    with caplog.at_level(logging.WARNING, "flare_im.admin_node"):
        await asyncio.wait_for(_deliver_broadcasts(consumer, broadcaster, retry_s=0.01), 5)  # type: ignore[arg-type]
    assert consumer.starts == 3
    assert broadcaster.consumers == [consumer]  # delivery began once, after the join
    refused = [r for r in caplog.records if "joining the consumer group failed" in r.getMessage()]
    assert len(refused) == 2


async def test_a_join_that_never_ends_holds_nothing_and_stops_when_cancelled() -> None:
    consumer, broadcaster = FlakyConsumer(hang=True), RecordingBroadcaster()
    task = asyncio.ensure_future(_deliver_broadcasts(consumer, broadcaster))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # the caller went on meanwhile: it did not wait for the join
    assert consumer.starts == 1
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert broadcaster.consumers == []


async def test_a_kafka_consumer_that_cannot_reach_its_broker_fails_with_a_queue_error_and_closes() -> None:
    unreachable = KafkaConfig(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=2000)
    consumer = KafkaConsumer(unreachable, ["flare.broadcast.none"], "flare-broadcast-none")
    with pytest.raises(QueueError, match="joining consumer group 'flare-broadcast-none' failed"):
        await asyncio.wait_for(consumer.start(), 30)
    await consumer.close()  # nothing half-started is left to stop
