"""The webhook worker over both queue adapters (in-process and Kafka, as in `flare serve` and `flare worker
webhooks`): events emitted by a node reach a real receiver once each; a worker killed with deliveries in hand leaves
them to the next worker's due loop once their lease runs out (at least once)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.server import FakeProvider, Request, Response, running
from tests.services import require

from flare_im.backends.queue.kafka import KafkaConsumer, KafkaProducer, KafkaQueueAdmin, kafka_config_from_url
from flare_im.backends.queue.memory import MemoryConsumer, MemoryProducer, MemoryQueueBroker
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.backends.webhooks.base import DELIVERED, PENDING, Endpoint
from flare_im.backends.webhooks.client import WebhookHttpClient
from flare_im.backends.webhooks.sqlite import SqliteWebhookStore
from flare_im.services.webhook_worker import WebhookWorker, WebhookWorkerConfig
from flare_im.services.webhooks import Webhooks
from flare_im.signing import verify_signature

SECRET = "worker-test-secret-0123"
KAFKA_OPTIONS = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100, "fetch_max_wait_ms": 50}


class Receiver(FakeProvider):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    async def handle(self, request: Request) -> Response:
        if not verify_signature(SECRET, request.headers.get("flare-signature", ""), request.body, now=time.time()):
            return Response(401)
        self.ids.append(request.json()["id"])
        return Response(204)


class Queue:
    """Producers and consumers of one queue backend on a topic of this test."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.topic = f"flare-test-webhooks-{uuid.uuid4().hex[:10]}"
        self.group = f"flare-test-{uuid.uuid4().hex[:10]}"
        self.broker = MemoryQueueBroker()
        self.config = None
        if name == "kafka":
            self.config = dataclasses.replace(kafka_config_from_url(require("kafka")), **KAFKA_OPTIONS)
        self.opened: list[Any] = []

    async def start(self) -> None:
        if self.config is None:
            self.broker.create_topic(self.topic, 4)
            return
        admin = KafkaQueueAdmin(self.config)
        await admin.start()
        await admin.ensure_topic(self.topic, 4)
        await admin.close()

    async def producer(self) -> Any:
        producer = MemoryProducer(self.broker) if self.config is None else KafkaProducer(self.config)
        await producer.start()
        self.opened.append(producer)
        return producer

    async def consumer(self) -> Any:
        consumer: Any = (
            MemoryConsumer(self.broker, [self.topic], self.group)
            if self.config is None
            else KafkaConsumer(self.config, [self.topic], self.group)
        )
        await consumer.start()
        self.opened.append(consumer)
        return consumer

    async def close(self) -> None:
        for opened in reversed(self.opened):
            await opened.close()
        if self.config is not None:
            admin = KafkaQueueAdmin(self.config)
            await admin.start()
            await admin.delete_topics([self.topic])
            await admin.close()


@pytest.fixture(params=["memory", "kafka"])
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[Queue]:
    q = Queue(request.param)
    await q.start()
    yield q
    await q.close()


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_events_reach_the_receiver_once_each_then_a_dead_worker_is_taken_over(
    queue: Queue, tmp_path: Path
) -> None:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "w.db")))
    store = SqliteWebhookStore(db)
    db.start()
    receiver = Receiver()
    tasks: list[asyncio.Task[None]] = []
    clients: list[Webhooks] = []
    try:
        async with running(receiver) as url:
            endpoint = Endpoint("wh_1", f"{url}/in", SECRET, ("presence",), created_at=1, updated_at=1)
            await store.put_endpoint(endpoint)
            producer = await queue.producer()
            node = Webhooks(store, WebhookHttpClient(), publish=producer.publish, topic=queue.topic)
            worker_hooks = Webhooks(store, WebhookHttpClient())
            clients += [node, worker_hooks]
            await node.reload()
            await worker_hooks.reload()
            config = WebhookWorkerConfig(lease_s=1.0, due_poll_s=0.1, backoff_s=0.1)
            worker = WebhookWorker(store=store, webhooks=worker_hooks, config=config)
            tasks.append(asyncio.ensure_future(worker.run(await queue.consumer())))
            for i in range(20):
                node.presence(f"user{i}", True, 0)
            await until(lambda: len(receiver.ids) == 20)
            assert len(set(receiver.ids)) == 20
            await until(lambda: worker.delivered == 20)

            # A worker dies holding deliveries: stored and leased to it, never sent.
            receiver.hold_after(0)
            for i in range(5):
                node.presence(f"late{i}", False, 1_000)
            await until(lambda: len(receiver.held) >= 1)
            tasks[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[0]
            await worker.abort()  # what dies with the process: the requests in flight
            receiver.release()
            await asyncio.sleep(0.2)
            stored = await store.deliveries()
            assert len(stored) == 25
            assert sum(d.state == PENDING for d in stored) >= 1
            # The next worker (a new member of the group) takes them over once their lease ran out.
            successor = WebhookWorker(store=store, webhooks=worker_hooks, config=config)
            tasks.append(asyncio.ensure_future(successor.run(await queue.consumer())))
            deadline = time.monotonic() + 15
            while any(d.state != DELIVERED for d in await store.deliveries()):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            late = {i.rsplit("_", 1)[0] for i in receiver.ids if i.startswith("p_late")}
            assert late == {f"p_late{i}_offline" for i in range(5)}  # every one arrived (some maybe twice)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for hooks in clients:
            await hooks.close_client()
        await db.close()


async def test_a_slow_endpoint_does_not_hold_up_the_others(queue: Queue, tmp_path: Path) -> None:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "w.db")))
    store = SqliteWebhookStore(db)
    db.start()
    slow, fast = Receiver(), Receiver()
    slow.hold_after(0)  # answers nothing until released
    hooks: list[Webhooks] = []
    task: asyncio.Task[None] | None = None
    worker: WebhookWorker | None = None
    try:
        async with running(slow) as slow_url, running(fast) as fast_url:
            await store.put_endpoint(Endpoint("wh_slow", slow_url, SECRET, ("presence",), timeout_ms=20_000))
            await store.put_endpoint(Endpoint("wh_fast", fast_url, SECRET, ("presence",)))
            producer = await queue.producer()
            node = Webhooks(store, WebhookHttpClient(), publish=producer.publish, topic=queue.topic)
            worker_hooks = Webhooks(store, WebhookHttpClient())
            hooks += [node, worker_hooks]
            await node.reload()
            await worker_hooks.reload()
            worker = WebhookWorker(store=store, webhooks=worker_hooks, config=WebhookWorkerConfig(due_poll_s=0.1))
            task = asyncio.ensure_future(worker.run(await queue.consumer()))
            for batch in range(3):  # three batches: the queue goes on while the slow endpoint holds the first
                for i in range(5):
                    node.presence(f"u{batch}-{i}", True, 0)
                await asyncio.sleep(0.3)
            await until(lambda: len(fast.ids) == 15, 10.0)
            assert slow.ids == []
            assert len(slow.held) >= 1
            slow.release()
            await until(lambda: len(slow.ids) == 15, 10.0)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if worker is not None:
            await worker.abort()
        for h in hooks:
            await h.close_client()
        await db.close()
