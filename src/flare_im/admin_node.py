"""Composition of admin operations (issue U8) for a `flare serve` node: the admin store, the account gate, kicks
on every node, the broadcast queue and its consumer, statistics. app.py calls these."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from flare_im.api.admin import AdminApi
from flare_im.backends.admin.base import AdminStore, Ban
from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.queue.base import Consumer, QueueError
from flare_im.backends.relational.base import AlreadyExists, RelationalStore, User
from flare_im.backends.sqlite_db import SqliteDatabase
from flare_im.config import Settings
from flare_im.gateway.cluster import ClusterFanout
from flare_im.gateway.hub import Hub
from flare_im.identity import check_id
from flare_im.ids import Snowflake, now_ms, snowflake_floor
from flare_im.services.admin import AccountGate, AdminKeys, refusal
from flare_im.services.admin_stats import AdminStats
from flare_im.services.admin_users import AdminUsers
from flare_im.services.auth import AuthService
from flare_im.services.broadcast import Broadcaster, Publish
from flare_im.services.conversations import ConversationService
from flare_im.services.router import Fanout, MessageRouter
from flare_im.services.users import UserService

log = logging.getLogger("flare")

Closer = Callable[[], Awaitable[None]]


@runtime_checkable
class CountsActive(Protocol):
    async def active_conversations(self, since_ms: int) -> int: ...


IN_PROCESS_RECORDS = 100_000  # broadcast chunks kept per partition of the in-process queue


async def open_admin_store(url: str, sqlite: Callable[[str], SqliteDatabase], closers: list[Closer]) -> AdminStore:
    """The admin store beside the relational data of ``url`` (SQLite: call before the database starts)."""
    if url.startswith("sqlite://"):
        from flare_im.backends.admin.sqlite import SqliteAdminStore

        return SqliteAdminStore(sqlite(url))
    from flare_im.backends.admin.postgres import PostgresAdminStore

    store = await PostgresAdminStore.open(url)
    closers.append(store.close)
    return store


async def ensure_system_user(users: RelationalStore, uid: str) -> None:
    """The sender of system notices exists (created once, without credentials)."""
    try:
        await users.create_user(
            User(uid=uid, username=None, display_name="System", avatar="", created_at=now_ms()), None
        )
    except AlreadyExists:
        if await users.get_credentials(uid) is not None:
            log.warning("the system user %r is an account someone can log in to: its notices come from it", uid)


async def start_admin(
    settings: Settings,
    *,
    store: AdminStore,
    relational: RelationalStore,
    auth: AuthService,
    users: UserService,
    router: MessageRouter,
    conversations: ConversationService,
    message_log: MessageLog,
    hub: Hub,
    fanout: Fanout,
    ids: Snowflake,
    log_db: SqliteDatabase | None,
    log_store: MessageLog | None,
    cluster_publish: Publish | None,
    root_key: str,
    stoppers: list[Closer],
) -> AdminApi:
    system = check_id(settings.system_user, "system_user")
    gate = AccountGate(store, refresh_s=settings.admin_refresh_s, activity_flush_s=settings.activity_flush_s)
    await gate.reload()

    def close_local(ban: Ban) -> None:  # a ban learned from the store: this node's devices of the user
        refused = refusal(ban)
        hub.kick_user(ban.uid, None, refused.close_code, refused.message)

    gate.on_refused = close_local
    gate.start()
    stoppers.append(gate.close)
    auth.gate = gate
    await ensure_system_user(relational, system)

    if isinstance(fanout, ClusterFanout):
        kick = fanout.kick
    else:

        async def kick(uid: str, device: str | None, code: int, reason: str) -> int:
            return hub.kick_user(uid, device, code, reason)

    admin_users = AdminUsers(
        store=store,
        gate=gate,
        auth=auth,
        users=users,
        kick=kick,
        memberships=relational,
        devices=relational,
        conversations=conversations,
        log_=message_log,
        router=router,
        system_user=system,
    )
    publish, consumer = await _broadcast_queue(settings, cluster_publish, stoppers)
    broadcaster = Broadcaster(
        store=store,
        publish=publish,
        topic=settings.broadcast_topic,
        router=router,
        users=relational,
        gate=gate,
        system_user=system,
        rate_per_s=settings.broadcast_rate_per_s,
    )
    task = asyncio.ensure_future(_deliver_broadcasts(consumer, broadcaster))
    if cluster_publish is None and (resumed := await broadcaster.resume()):
        log.info("%d broadcasts interrupted by the last stop are delivered again", resumed)

    async def stop_broadcasts() -> None:
        # The chunk in hand is not waited for (at a low rate that could take long): it is not committed, so its
        # notices come again (Kafka: to another node) and those already appended are not appended twice.
        await broadcaster.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.close()

    stoppers.insert(0, stop_broadcasts)

    async def active_conversations(since_ms: int) -> int | None:
        if log_db is None:
            if isinstance(log_store, CountsActive):  # ClickHouse
                return await log_store.active_conversations(since_ms)
            return None
        row = log_db.fetchone(
            "SELECT COUNT(DISTINCT conv) FROM messages WHERE msg_id >= ?", (snowflake_floor(since_ms),)
        )
        return int(row[0])

    stats = AdminStats(
        store=store,
        hub=hub,
        ids=ids,
        node=f"node-{settings.node_id}",
        gate=gate,
        active_conversations=active_conversations,
        interval_s=settings.admin_stats_interval_s,
    )
    stats.start()
    stoppers.append(stats.close)
    return AdminApi(AdminKeys(store, root_key), admin_users, broadcaster, stats, store, gate)


async def _deliver_broadcasts(consumer: Consumer, broadcaster: Broadcaster, retry_s: float = 1.0) -> None:
    """Join the broadcast group, then deliver. The node does not wait for the join at start: in a cluster it waits
    for the group's rebalance, which a member that died without leaving holds up until its session expires."""
    while True:
        try:
            await consumer.start()
            break
        except QueueError as exc:
            log.warning("broadcasts: joining the consumer group failed (%s); trying again in %.0f s", exc, retry_s)
            await asyncio.sleep(retry_s)
            retry_s = min(retry_s * 2, 30.0)
    await broadcaster.run(consumer)


async def _broadcast_queue(
    settings: Settings, cluster_publish: Publish | None, stoppers: list[Closer]
) -> tuple[Publish, Consumer]:
    """The broadcast topic's producer and this node's consumer: Kafka with several nodes, else in-process."""
    if cluster_publish is not None:
        from flare_im.backends.queue.kafka import KafkaConsumer, KafkaQueueAdmin, kafka_config_from_url

        kafka = kafka_config_from_url(settings.queue_url)
        admin = KafkaQueueAdmin(kafka)
        await admin.start()
        try:
            await admin.ensure_topic(settings.broadcast_topic, settings.broadcast_partitions)
        finally:
            await admin.close()
        return cluster_publish, KafkaConsumer(kafka, [settings.broadcast_topic], settings.broadcast_group)
    from flare_im.backends.queue.memory import MemoryConsumer, MemoryProducer, MemoryQueueBroker, MemoryQueueConfig

    broker = MemoryQueueBroker(MemoryQueueConfig(max_records_per_partition=IN_PROCESS_RECORDS))
    broker.create_topic(settings.broadcast_topic, settings.broadcast_partitions)
    return MemoryProducer(broker).publish, MemoryConsumer(broker, [settings.broadcast_topic], settings.broadcast_group)
