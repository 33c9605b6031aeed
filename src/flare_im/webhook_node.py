"""Composition of the integration webhooks (docs/integration.md): the node's endpoint cache and emitter, with the
after-event worker in-process for ``flare serve`` on one node, and ``flare worker webhooks`` over Kafka and
PostgreSQL in a cluster. app.py and cli.py call these."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flare_im.aio import stop_on_signals
from flare_im.backends.queue.memory import MemoryConsumer, MemoryProducer, MemoryQueueBroker, MemoryQueueConfig
from flare_im.backends.sqlite_db import SqliteDatabase
from flare_im.backends.webhooks.base import WebhookStore
from flare_im.backends.webhooks.client import WebhookHttpClient
from flare_im.config import Settings
from flare_im.services.webhook_worker import WebhookWorker, WebhookWorkerConfig
from flare_im.services.webhooks import Publish, Webhooks

log = logging.getLogger("flare")

Closer = Callable[[], Awaitable[None]]
IN_PROCESS_RECORDS = 100_000  # events kept per partition of the in-process queue


def worker_config(settings: Settings) -> WebhookWorkerConfig:
    return WebhookWorkerConfig(
        max_tries=settings.webhook_max_tries,
        backoff_s=settings.webhook_backoff_s,
        lease_s=settings.webhook_lease_s,
        retention_s=settings.webhook_history_days * 86400,
    )


async def open_webhook_store(url: str, sqlite: Callable[[str], SqliteDatabase], closers: list[Closer]) -> WebhookStore:
    """The store on the relational database: SQLite migrates itself (call this before the database starts);
    PostgreSQL is refused when ``flare migrate`` has not applied the webhooks schema."""
    if url.startswith("sqlite://"):
        from flare_im.backends.webhooks.sqlite import SqliteWebhookStore

        return SqliteWebhookStore(sqlite(url))
    if url.startswith(("postgresql://", "postgres://")):
        from flare_im.backends.webhooks.postgres import PostgresWebhookStore

        store = await PostgresWebhookStore.open(url)
        closers.append(store.close)
        return store
    raise ValueError(f"unsupported database_url {url!r} (sqlite://, postgresql://)")


def _webhooks(settings: Settings, store: WebhookStore, publish: Publish | None) -> Webhooks:
    client = WebhookHttpClient(ca_file=settings.webhook_ca_file)
    return Webhooks(
        store,
        client,
        publish=publish,
        topic=settings.webhook_topic,
        refresh_s=settings.webhook_refresh_s,
        max_body_bytes=settings.max_body_bytes,
    )


@dataclass(slots=True)
class NodeWebhooks:
    webhooks: Webhooks
    worker: WebhookWorker | None  # one node: the after-event worker of this process


async def start_webhooks(
    settings: Settings, store: WebhookStore, cluster_publish: Publish | None, stoppers: list[Closer]
) -> NodeWebhooks:
    """The node's webhooks, started (stopped by ``stoppers``). One node: the queue and the after-event worker run
    in this process. A cluster: events go to the Kafka topic, for `flare worker webhooks`."""
    worker: WebhookWorker | None = None
    if cluster_publish is not None:
        await ensure_topic(settings)
        webhooks = _webhooks(settings, store, cluster_publish)
        stop_worker: Closer | None = None
    else:
        broker = MemoryQueueBroker(MemoryQueueConfig(max_records_per_partition=IN_PROCESS_RECORDS))
        broker.create_topic(settings.webhook_topic, settings.webhook_partitions)
        webhooks = _webhooks(settings, store, MemoryProducer(broker).publish)
        worker = WebhookWorker(store=store, webhooks=webhooks, config=worker_config(settings))
        consumer = MemoryConsumer(broker, [settings.webhook_topic], settings.webhook_group)
        await consumer.start()
        task = asyncio.ensure_future(worker.run(consumer))

        async def stop_worker() -> None:
            await consumer.close()  # ends run() after the batch in hand; the rest stays pending in the store
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10.0)
            await worker.drain(5.0)

    await webhooks.reload(force=True)
    webhooks.start()

    async def stop() -> None:
        await webhooks.close()
        if stop_worker is not None:
            await stop_worker()
        await webhooks.close_client()

    stoppers.append(stop)
    return NodeWebhooks(webhooks, worker)


async def ensure_topic(settings: Settings) -> None:
    from flare_im.backends.queue.kafka import KafkaQueueAdmin, kafka_config_from_url

    admin = KafkaQueueAdmin(kafka_config_from_url(settings.queue_url))
    await admin.start()
    try:
        await admin.ensure_topic(settings.webhook_topic, settings.webhook_partitions)
    finally:
        await admin.close()


async def run_webhook_worker(settings: Settings) -> int:
    """``flare worker webhooks``: deliver the after-events of the webhooks topic (one consumer group over any
    number of workers) until SIGINT/SIGTERM."""
    from flare_im.backends.queue.kafka import KafkaConsumer, kafka_config_from_url
    from flare_im.observability import tracing

    if not settings.distributed:
        raise ValueError("flare worker webhooks needs cache_url and queue_url (one node delivers in flare serve)")
    if not settings.database_url.startswith(("postgresql://", "postgres://")):
        raise ValueError("flare worker webhooks needs a shared database_url (postgresql://)")
    closers: list[Closer] = []
    tracing.configure(settings, "worker:webhooks")
    await ensure_topic(settings)

    def no_sqlite(url: str) -> SqliteDatabase:
        raise ValueError(f"flare worker webhooks needs a shared database_url (postgresql://), not {url!r}")

    store = await open_webhook_store(settings.database_url, no_sqlite, closers)
    webhooks = _webhooks(settings, store, None)
    await webhooks.reload(force=True)
    webhooks.start()
    worker = WebhookWorker(store=store, webhooks=webhooks, config=worker_config(settings))
    consumer = KafkaConsumer(
        kafka_config_from_url(settings.queue_url), [settings.webhook_topic], settings.webhook_group
    )
    await consumer.start()
    stop = stop_on_signals()
    task = asyncio.ensure_future(worker.run(consumer))
    print(f"flare worker ready webhooks group={settings.webhook_group} topic={settings.webhook_topic}", flush=True)
    await asyncio.wait([task, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    await consumer.close()  # uncommitted events go to the next member; their deliveries are stored or sent again
    with contextlib.suppress(asyncio.CancelledError):
        task.cancel()
        await task
    await worker.drain(5.0)
    await webhooks.close()
    await webhooks.close_client()
    for close in closers:
        await close()
    tracing.shutdown()  # exports the spans still pending
    log.info("webhook worker stopped: %d delivered, %d dead", worker.delivered, worker.dead)
    return 0


async def open_webhook_emitter(settings: Settings, closers: list[Closer]) -> Webhooks:
    """A cluster process other than a node (``flare worker push``): the endpoint cache and an emitter onto the
    webhooks topic, for the after-events it is the source of (``push_dropped``). Closed by ``closers``."""
    from flare_im.backends.queue.kafka import KafkaProducer, kafka_config_from_url

    def no_sqlite(url: str) -> SqliteDatabase:
        raise ValueError(f"several nodes need a shared database_url (postgresql://), not {url!r}")

    await ensure_topic(settings)
    store = await open_webhook_store(settings.database_url, no_sqlite, closers)
    producer = KafkaProducer(kafka_config_from_url(settings.queue_url))
    await producer.start()
    webhooks = _webhooks(settings, store, producer.publish)
    await webhooks.reload(force=True)
    webhooks.start()

    async def close() -> None:
        await webhooks.close()
        await producer.close()  # waits for queued events
        await webhooks.close_client()

    closers.insert(0, close)  # before the store's pool closes
    return webhooks
