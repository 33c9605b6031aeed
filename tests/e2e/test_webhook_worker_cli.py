"""`flare worker webhooks` as a real process in a cluster's setting (Kafka, PostgreSQL after `flare migrate`): it
delivers the after-events on the webhooks topic to a real receiver once each (events of the nodes, and a dropped
notification from the emitter `flare worker push` uses), and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from msgspec import structs
from tests.conftest import fresh_postgres_schema
from tests.fakes.server import FakeProvider, Request, Response, running
from tests.services import require

from flare_im.backends.queue.kafka import KafkaProducer, kafka_config_from_url
from flare_im.backends.relational.notifications import PushJob
from flare_im.backends.webhooks.base import DELIVERED, Endpoint
from flare_im.backends.webhooks.postgres import PostgresWebhookStore
from flare_im.config import Settings
from flare_im.services.webhooks import WebhookEvent, encode_event
from flare_im.signing import verify_signature
from flare_im.webhook_node import open_webhook_emitter

SECRET = "cluster-worker-secret-01"


class Receiver(FakeProvider):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    async def handle(self, request: Request) -> Response:
        if not verify_signature(SECRET, request.headers.get("flare-signature", ""), request.body, now=time.time()):
            return Response(401)
        self.ids.append(request.json()["id"])
        return Response(200)


async def test_the_webhook_worker_process_delivers_from_kafka(tmp_path: Path) -> None:
    kafka_url = require("kafka")
    redis_url = require("redis")
    suffix = uuid.uuid4().hex[:10]
    async with fresh_postgres_schema() as pg_url:
        env = {
            **os.environ,
            "FLARE_DATABASE_URL": pg_url,
            "FLARE_CACHE_URL": redis_url,
            "FLARE_CACHE_PREFIX": f"flare-test-{suffix}:",
            "FLARE_QUEUE_URL": f"{kafka_url}?session_timeout_ms=1000&heartbeat_interval_ms=100",
            "FLARE_MESSAGE_STORE_URL": "clickhouse://127.0.0.1:18123/unused",
            "FLARE_WEBHOOK_TOPIC": f"flare-test-webhooks-{suffix}",
            "FLARE_WEBHOOK_GROUP": f"flare-test-{suffix}",
            "FLARE_LOG_LEVEL": "WARNING",
        }
        migrated = subprocess.run(  # noqa: ASYNC221 - a short CLI run before the test's own loop work
            [sys.executable, "-m", "flare_im.cli", "migrate", "--data-dir", str(tmp_path)], env=env, capture_output=True
        )
        assert migrated.returncode == 0, migrated.stderr
        receiver = Receiver()
        async with running(receiver) as url:
            store = await PostgresWebhookStore.open(pg_url)
            events = ("after_send", "push_dropped")
            await store.put_endpoint(Endpoint("wh_c1", f"{url}/in", SECRET, events, created_at=1, updated_at=1))
            worker = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "flare_im.cli", "worker", "webhooks"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            producer = KafkaProducer(kafka_config_from_url(kafka_url))
            try:
                assert worker.stdout is not None
                ready = await asyncio.to_thread(worker.stdout.readline)
                assert ready.startswith(b"flare worker ready webhooks"), ready + (
                    worker.stderr.read() if worker.stderr else b""
                )
                await producer.start()
                for i in range(10):
                    event = WebhookEvent(f"m_{i}", "after_send", 1_000 + i, {"conv": "d:a:b", "seq": i + 1})
                    await producer.publish(env["FLARE_WEBHOOK_TOPIC"], "d:a:b", encode_event(event))
                deadline = time.monotonic() + 30
                while len(receiver.ids) < 10:
                    assert time.monotonic() < deadline, receiver.ids
                    await asyncio.sleep(0.05)
                assert sorted(receiver.ids) == sorted(f"m_{i}" for i in range(10))
                # What `flare worker push` emits: a dropped notification, through its own emitter.
                closers: list[Any] = []
                hooks = await open_webhook_emitter(Settings.load(environ=env), closers)
                dropped = PushJob("bob|phone|d:a:b|3", "bob", "phone", "fcm", "message", "d:a:b", 3, "dropped",
                                  reason="muted", updated_at=5)  # fmt: skip
                online = structs.replace(dropped, job_id="x", reason="online")  # online: not reported
                hooks.push_dropped([dropped, online])
                for close in closers:
                    await close()
                deadline = time.monotonic() + 30
                while len(receiver.ids) < 11:
                    assert time.monotonic() < deadline, receiver.ids
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                assert receiver.ids[10:] == ["d_bob|phone|d:a:b|3"]
                deadline = time.monotonic() + 5
                while any(d.state != DELIVERED for d in await store.deliveries()):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                assert len(await store.deliveries(state=DELIVERED)) == 11
            finally:
                await producer.close()
                worker.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(worker.wait, 30)
                errors = worker.stderr.read().decode() if worker.stderr else ""
                for pipe in (worker.stdout, worker.stderr):
                    if pipe is not None:
                        pipe.close()
                await store.close()
            assert code == 0, errors
            assert "Traceback" not in errors
