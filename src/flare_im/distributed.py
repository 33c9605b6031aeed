"""Backends of a node in distributed mode, built from the settings' URLs (DESIGN.md §5).

Redis (``cache_url``): sequencer, route table, node bus, shared idempotency keys, L0. Kafka (``queue_url``):
the messages topic. ClickHouse (``message_store_url``): the message store, written by the store worker and
read by every node for what L0 no longer holds. The relational store (PostgreSQL) is opened by app.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flare_im.aio import stop_on_signals
from flare_im.backends.bus.redis import RedisNodeBus
from flare_im.backends.idempotency.redis import RedisIdempotencyStore
from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.message_log.queued import QueuedMessageLog
from flare_im.backends.message_log.recent_cache import RecentCache
from flare_im.backends.queue.base import Position
from flare_im.backends.ratelimit.redis import RedisRateLimiter
from flare_im.backends.redis_client import redis_from_url
from flare_im.backends.routes.redis import RedisRouteTable
from flare_im.backends.sequencer.redis import RedisSequencer
from flare_im.config import Settings
from flare_im.gateway.cluster import ClusterFanout
from flare_im.gateway.hub import Hub

log = logging.getLogger("flare")

Closer = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class ClusterBackends:
    log: QueuedMessageLog
    store: MessageLog
    sequencer: RedisSequencer
    idempotency: RedisIdempotencyStore
    rate_limiter: RedisRateLimiter
    fanout: ClusterFanout
    hub: Hub
    publish: Callable[[str, str, bytes], Awaitable[Position]]  # the producer's (the push topic)


async def open_store(url: str, closers: list[Closer]) -> MessageLog:
    """The message store (ClickHouse server over HTTP, or chdb in-process)."""
    from flare_im.backends.message_log.clickhouse import ClickHouseConfig, ClickHouseMessageLog

    store = await ClickHouseMessageLog.open(ClickHouseConfig(url=url))
    closers.append(store.close)
    return store


async def open_archived_store(settings: Settings, closers: list[Closer]) -> MessageLog:
    """The message store read through the cold archive (archive/cluster.py): archived ranges come from the
    object store. Without pyarrow (the archive extra) the store alone, unless parts are recorded already."""
    from flare_im.backends.message_log.clickhouse import ClickHouseConfig, ClickHouseMessageLog

    store = await ClickHouseMessageLog.open(ClickHouseConfig(url=settings.message_store_url))
    closers.append(store.close)
    try:
        from flare_im.archive.cluster import open_reader
    except ImportError as exc:
        await _refuse_if_archived(settings, exc)
        return store
    return await open_reader(settings, store, closers)


async def _refuse_if_archived(settings: Settings, exc: ImportError) -> None:
    if not settings.database_url.startswith(("postgresql://", "postgres://")):
        return
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        archived = await conn.fetchval(
            "SELECT to_regclass('archive_parts') IS NOT NULL AND EXISTS (SELECT 1 FROM archive_parts)"
        )
    except asyncpg.UndefinedTableError:
        archived = False
    finally:
        await conn.close()
    if archived:
        raise ValueError(f"history was archived in this cluster; reading it needs flare-im[archive] ({exc})")
    log.warning("the archive extra (pyarrow) is missing: this node cannot read archived history (%s)", exc)


async def open_cluster(settings: Settings, closers: list[Closer]) -> ClusterBackends:
    from flare_im.backends.queue.kafka import (
        KafkaGroupOffsets,
        KafkaProducer,
        KafkaQueueAdmin,
        kafka_config_from_url,
    )

    prefix = settings.cache_prefix
    redis = redis_from_url(settings.cache_url, max_connections=256)
    closers.append(redis.aclose)
    kafka = kafka_config_from_url(settings.queue_url)
    admin = KafkaQueueAdmin(kafka)
    await admin.start()
    try:
        await admin.ensure_topic(settings.messages_topic, settings.messages_partitions)
        if settings.push_enabled:
            await admin.ensure_topic(settings.push_topic, settings.push_partitions)
    finally:
        await admin.close()
    offsets = KafkaGroupOffsets(kafka, settings.store_group)
    await offsets.start()
    closers.append(offsets.close)
    producer = KafkaProducer(kafka)
    await producer.start()
    closers.insert(0, producer.close)  # queued records are acknowledged before anything else closes
    store = await open_archived_store(settings, closers)
    cache = RecentCache(redis, prefix, keep=settings.l0_keep)
    topic = settings.messages_topic

    async def worker_offsets() -> dict[int, int]:
        return await offsets.committed(topic)

    log_ = QueuedMessageLog(producer=producer, topic=topic, cache=cache, store=store, worker_offsets=worker_offsets)
    node = f"node-{settings.node_id}"
    holder: list[ClusterFanout] = []
    hub = Hub(on_route=lambda uid, device, up: holder[0].route_changed(uid, device, up))
    fanout = ClusterFanout(
        hub,
        RedisRouteTable(redis, prefix, ttl_s=settings.route_ttl_s),
        RedisNodeBus(redis, prefix),
        node,
        heartbeat_s=settings.route_ttl_s / 3,
    )
    holder.append(fanout)
    await fanout.start()
    closers.insert(0, fanout.close)
    return ClusterBackends(
        log=log_,
        store=store,
        sequencer=RedisSequencer(redis, log_.max_seq, prefix),
        idempotency=RedisIdempotencyStore(redis, prefix),
        rate_limiter=RedisRateLimiter(redis, prefix),
        fanout=fanout,
        hub=hub,
        publish=producer.publish,
    )


async def run_store_worker(settings: Settings) -> int:
    """``flare worker store``: consume the messages topic into the store until SIGINT/SIGTERM."""
    from flare_im.backends.queue.kafka import KafkaConsumer, KafkaQueueAdmin, kafka_config_from_url
    from flare_im.observability import tracing
    from flare_im.observability.sources import consumer_source, store_source
    from flare_im.observability.wiring import for_worker as observability_for_worker
    from flare_im.workers.store import StoreWorker

    if not settings.distributed:
        raise ValueError("flare worker store needs cache_url, queue_url and a clickhouse:// message_store_url")
    closers: list[Closer] = []
    tracing.configure(settings, "worker:store")
    kafka = kafka_config_from_url(settings.queue_url)
    admin = KafkaQueueAdmin(kafka)
    await admin.start()
    try:
        await admin.ensure_topic(settings.messages_topic, settings.messages_partitions)
    finally:
        await admin.close()
    store = await open_archived_store(settings, closers)  # operations on archived messages apply
    consumer = KafkaConsumer(kafka, [settings.messages_topic], settings.store_group)
    await consumer.start()
    worker = StoreWorker(consumer, store)
    stop = stop_on_signals()
    task = asyncio.ensure_future(worker.run())
    obs, metrics_port = await observability_for_worker(
        "store", settings, [store_source(worker), consumer_source(consumer, settings.store_group)], stop
    )
    print(
        f"flare worker ready store group={settings.store_group} topic={settings.messages_topic} metrics={metrics_port}",
        flush=True,
    )
    await asyncio.wait([task, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    stop.set()  # /readyz answers 503 from here on
    await consumer.close()  # uncommitted records go to the next member of the group
    with contextlib.suppress(asyncio.CancelledError):
        task.cancel()
        await task
    await obs.close()
    for close in closers:
        await close()
    tracing.shutdown()  # exports the spans still pending
    log.info("store worker stopped: %d events in %d batches", worker.written, worker.batches)
    return 0
