"""Composition of the notification service (docs/push.md): in-process for ``flare serve`` on one node, and
``flare worker push`` over Kafka, PostgreSQL, Redis and ClickHouse in a cluster. app.py and cli.py call these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from flare_im.aio import stop_on_signals
from flare_im.api.notifications import NotificationsApi
from flare_im.backends.message_log.base import ConvHead, MessageLog
from flare_im.backends.push.base import PushProvider
from flare_im.backends.push.build import disabled_providers, providers_from_settings, vapid_key_from_settings
from flare_im.backends.queue.memory import (
    MemoryConsumer,
    MemoryProducer,
    MemoryQueueBroker,
    MemoryQueueConfig,
)
from flare_im.backends.relational.base import RelationalStore
from flare_im.backends.relational.notifications import NotificationStore
from flare_im.config import Settings
from flare_im.gateway.cluster import ClusterFanout
from flare_im.gateway.hub import Hub
from flare_im.services.notify import Notifier, Publish, TargetCache
from flare_im.services.notify_settings import NotifySettingsService
from flare_im.services.notify_worker import Heads, Online, PushConfig, PushWorker
from flare_im.services.router import Fanout

log = logging.getLogger("flare")

Closer = Callable[[], Awaitable[None]]
IN_PROCESS_RECORDS = 100_000  # push events kept per partition of the in-process queue


def push_config(settings: Settings) -> PushConfig:
    return PushConfig(
        collapse_window_s=settings.push_collapse_window_s,
        max_tries=settings.push_max_tries,
        backoff_s=settings.push_backoff_s,
        device_rate=settings.push_device_rate_per_min,
        device_rate_window_s=60.0,
        provider_rate_per_s=settings.push_provider_rate_per_s,
        retention_s=settings.push_history_days * 86400,
        lease_s=settings.push_lease_s,
    )


def providers(settings: Settings) -> tuple[dict[str, PushProvider], dict[str, str]]:
    """The configured adapters, and why each other one is disabled (one start-up line each)."""
    disabled = disabled_providers(settings)
    for name, why in sorted(disabled.items()):
        log.info("push provider %s disabled: %s", name, why)
    return providers_from_settings(settings), disabled


@dataclass(slots=True)
class EmbeddedPush:
    notifier: Notifier
    targets: TargetCache
    worker: PushWorker
    disabled: dict[str, str]
    stop: Closer


async def start_embedded_push(
    settings: Settings, relational: RelationalStore, heads: Heads, online: Online, jobs: NotificationStore | None = None
) -> EmbeddedPush:
    """One node: the push queue in-process, its worker a task of this process. ``jobs``: the push jobs' store
    (default ``relational``; the webhooks decorate it to report dropped notifications)."""
    broker = MemoryQueueBroker(MemoryQueueConfig(max_records_per_partition=IN_PROCESS_RECORDS))
    broker.create_topic(settings.push_topic, settings.push_partitions)
    producer = MemoryProducer(broker)
    targets = TargetCache(relational)
    notifier = Notifier(producer.publish, settings.push_topic, wanted=targets.wanted)
    adapters, disabled = providers(settings)
    worker = PushWorker(
        jobs=jobs or relational,
        devices=relational,
        memberships=relational,
        users=relational,
        groups=relational,
        heads=heads,
        online=online,
        targets=targets,
        providers=adapters,
        disabled=disabled,
        config=push_config(settings),
    )
    consumer = MemoryConsumer(broker, [settings.push_topic], settings.push_group)
    await consumer.start()
    task = asyncio.ensure_future(worker.run(consumer))

    async def stop() -> None:
        await consumer.close()  # ends run() after the batch in hand
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10.0)
        await worker.close()

    return EmbeddedPush(notifier, targets, worker, disabled, stop)


@dataclass(slots=True)
class NodePush:
    """What a `flare serve` node needs of the notification service."""

    notifier: Notifier
    api: NotificationsApi
    changed: Callable[[str], None] | None  # a user's push registrations changed (one node: the worker's cache)
    worker: PushWorker | None = None  # one node: the worker of this process (its /metrics)


async def start_push(
    settings: Settings,
    relational: RelationalStore,
    log_: MessageLog,
    hub: Hub,
    fanout: Fanout,
    cluster_publish: Publish | None,
    stoppers: list[Closer],
    *,
    jobs: NotificationStore | None = None,
) -> NodePush | None:
    """The node's notifier (and, on one node, the worker as a task of this process, stopped by ``stoppers``);
    None when ``push_enabled`` is off."""
    if not settings.push_enabled:
        return None
    deliver = fanout.deliver_frame if isinstance(fanout, ClusterFanout) else hub.deliver_frame
    if cluster_publish is not None:  # the workers are `flare worker push` processes
        disabled = disabled_providers(settings)
        settings_api = NotifySettingsService(relational, deliver)
        api = NotificationsApi(settings_api, relational, disabled, vapid_public_key(settings, disabled))
        return NodePush(Notifier(cluster_publish, settings.push_topic), api, None)
    embedded = await start_embedded_push(settings, relational, log_.heads, hub_online(hub.devices), jobs)
    stoppers.append(embedded.stop)
    api = NotificationsApi(
        NotifySettingsService(relational, deliver),
        relational,
        embedded.disabled,
        vapid_public_key(settings, embedded.disabled),
    )
    return NodePush(embedded.notifier, api, lambda _uid: embedded.targets.clear(), embedded.worker)


def vapid_public_key(settings: Settings, disabled: dict[str, str]) -> str:
    """What ``GET /v1/push/vapid`` answers: the Web Push key's public half, '' when Web Push is disabled."""
    return "" if "webpush" in disabled else vapid_key_from_settings(settings).public_key


def hub_online(devices: Callable[[str], set[str]]) -> Online:
    async def online(uids: Sequence[str]) -> dict[str, set[str]]:
        return {uid: found for uid in uids if (found := devices(uid))}

    return online


async def run_push_worker(settings: Settings) -> int:
    """``flare worker push``: consume the push topic (one consumer group over any number of workers) until
    SIGINT/SIGTERM."""
    from flare_im.app import open_relational
    from flare_im.backends.message_log.recent_cache import RecentCache
    from flare_im.backends.queue.kafka import KafkaConsumer, KafkaQueueAdmin, kafka_config_from_url
    from flare_im.backends.redis_client import redis_from_url
    from flare_im.backends.routes.redis import RedisRouteTable
    from flare_im.distributed import open_store
    from flare_im.observability import tracing
    from flare_im.observability.sources import consumer_source, push_source
    from flare_im.observability.wiring import for_worker as observability_for_worker
    from flare_im.services.webhooks import DropReportingJobs
    from flare_im.webhook_node import open_webhook_emitter

    if not settings.distributed:
        raise ValueError("flare worker push needs cache_url, queue_url and a clickhouse:// message_store_url")
    closers: list[Closer] = []
    tracing.configure(settings, "worker:push")
    kafka = kafka_config_from_url(settings.queue_url)
    admin = KafkaQueueAdmin(kafka)
    await admin.start()
    try:
        await admin.ensure_topic(settings.push_topic, settings.push_partitions)
    finally:
        await admin.close()

    def no_sqlite(url: str) -> object:
        raise ValueError(f"flare worker push needs a shared database_url (postgresql://), not {url!r}")

    relational = await open_relational(settings.effective_database_url, no_sqlite, closers)  # type: ignore[arg-type]
    hooks = await open_webhook_emitter(settings, closers)  # dropped notifications are push_dropped after-events
    store = await open_store(settings.message_store_url, closers)
    redis = redis_from_url(settings.cache_url, max_connections=32)
    closers.append(redis.aclose)
    cache = RecentCache(redis, settings.cache_prefix, keep=settings.l0_keep)
    routes = RedisRouteTable(redis, settings.cache_prefix, ttl_s=settings.route_ttl_s)

    async def heads(convs: Sequence[str]) -> dict[str, ConvHead]:
        cached = await cache.heads(convs)
        out = await store.heads([c for c in convs if c not in cached])
        out.update((c, ConvHead(c, max_seq, version, None)) for c, (max_seq, version, _) in cached.items())
        return out

    async def online(uids: Sequence[str]) -> dict[str, set[str]]:
        return {uid: set(devices) for uid, devices in (await routes.lookup(uids)).items()}

    adapters, disabled = providers(settings)
    worker = PushWorker(
        jobs=DropReportingJobs(relational, hooks),
        devices=relational,
        memberships=relational,
        users=relational,
        groups=relational,
        heads=heads,
        online=online,
        targets=TargetCache(relational, ttl_s=5.0),
        providers=adapters,
        disabled=disabled,
        config=push_config(settings),
    )
    consumer = KafkaConsumer(kafka, [settings.push_topic], settings.push_group)
    await consumer.start()
    stop = stop_on_signals()
    task = asyncio.ensure_future(worker.run(consumer))
    obs, metrics_port = await observability_for_worker(
        "push", settings, [push_source(worker), consumer_source(consumer, settings.push_group)], stop
    )
    print(
        f"flare worker ready push group={settings.push_group} topic={settings.push_topic} metrics={metrics_port}",
        flush=True,
    )
    await asyncio.wait([task, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    stop.set()  # /readyz answers 503 from here on
    await consumer.close()  # uncommitted events go to the next member of the group; their jobs are claimed or done
    with contextlib.suppress(asyncio.CancelledError):
        task.cancel()
        await task
    await worker.close()
    await obs.close()
    for close in closers:
        await close()
    tracing.shutdown()  # exports the spans still pending
    log.info("push worker stopped: %d sent in %d batches", worker.sent, worker.batches)
    return 0
