"""Composition root: builds backends from URLs, services from backends, and runs both gateways."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from flare_im.api.http import ApiContext, build_api
from flare_im.backends.idempotency.base import IdempotencyStore
from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.ratelimit.base import RateLimiter
from flare_im.backends.ratelimit.memory import MemoryRateLimiter
from flare_im.backends.relational.base import RelationalStore
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sequencer.base import Sequencer
from flare_im.backends.sequencer.memory import MemorySequencer
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase, parse_sqlite_url
from flare_im.config import Settings
from flare_im.gateway.cluster import ClusterFanout
from flare_im.gateway.connection import GatewayContext, GatewayLimits
from flare_im.gateway.hub import Hub
from flare_im.gateway.output import OutputBatcher
from flare_im.gateway.server import start_ws_server
from flare_im.ids import Snowflake, VersionClock, now_ms
from flare_im.protocol.codec import Encoding, ServerCodec
from flare_im.protocol.errors import CloseCode
from flare_im.services.auth import AuthService, load_or_create_secret
from flare_im.services.content_filter import ContentFilter
from flare_im.services.conversations import ConversationService
from flare_im.services.devices import DeviceService
from flare_im.services.groups import GroupService
from flare_im.services.idempotency import IdempotencyCache, SharedIdempotencyKeeper
from flare_im.services.operations import MessageOperations
from flare_im.services.presence import PresenceService
from flare_im.services.router import Fanout, MessageRouter
from flare_im.services.status import StatusService
from flare_im.services.sync import SyncService
from flare_im.services.users import UserService

log = logging.getLogger("flare")

# Several nodes: how long a write of another node may take (sync positions stay this far behind), and how
# long a group's member list is trusted before it is read again (another node may have changed it).
PEERS_LAG_US = 2_000_000
GROUP_CACHE_TTL_S = 2.0


@dataclass(slots=True)
class Node:
    """Everything one `flare serve` process runs."""

    settings: Settings
    databases: list[SqliteDatabase]
    hub: Hub
    gateway: GatewayContext
    api: ApiContext
    router: MessageRouter
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # other backends' close()
    stoppers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # background tasks' stop

    async def close(self) -> None:
        """Stop background tasks, then close every backend (queued writes are flushed first)."""
        for stop in self.stoppers:
            await stop()
        for db in self.databases:
            await db.close()
        for close in self.closers:
            await close()


async def build_node(settings: Settings) -> Node:
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    databases: dict[str, SqliteDatabase] = {}
    closers: list[Callable[[], Awaitable[None]]] = []

    def sqlite(url: str) -> SqliteDatabase:
        path = parse_sqlite_url(url)
        if path not in databases:
            databases[path] = SqliteDatabase(SqliteConfig(path=path, synchronous=settings.sqlite_synchronous.upper()))
        return databases[path]

    relational = await open_relational(settings.effective_database_url, sqlite, closers)
    message_log: MessageLog
    sequencer: Sequencer
    fanout: Fanout
    shared_idempotency: IdempotencyStore | None = None
    rate_limiter: RateLimiter = MemoryRateLimiter()
    if settings.distributed:
        from flare_im.distributed import open_cluster

        cluster = await open_cluster(settings, closers)
        message_log, sequencer, fanout, hub = cluster.log, cluster.sequencer, cluster.fanout, cluster.hub
        shared_idempotency = cluster.idempotency
        rate_limiter = cluster.rate_limiter
    else:
        if not settings.effective_message_store_url.startswith("sqlite://"):
            raise ValueError(f"unsupported message_store_url {settings.effective_message_store_url!r} on one node")
        sqlite_log = SqliteMessageLog(sqlite(settings.effective_message_store_url))
        message_log, sequencer = sqlite_log, MemorySequencer(sqlite_log.max_seq)
        hub = Hub()
        fanout = hub
    for db in databases.values():  # after the adapters migrated their schemas on the writer connection
        db.start()

    idempotency = IdempotencyCache(window_s=settings.idempotency_window_s, max_entries=settings.idempotency_cache_size)
    log_version = 0
    if not settings.distributed:
        # One node: its log is the only memory of recent sends and of the versions handed out. (With several
        # nodes the shared idempotency store and the wall clock serve instead, and reading the store here
        # would make a node's start wait for the store worker.)
        preload_limit = 2_000_000
        recent = await message_log.recent_client_ids(now_ms() - settings.idempotency_window_s * 1000, preload_limit)
        idempotency.preload(recent, complete=len(recent) < preload_limit)
        log_version = await message_log.max_version()
    clock = VersionClock(
        max(await relational.max_version(), log_version),
        peers_lag_us=PEERS_LAG_US if settings.distributed else 0,
    )
    stoppers: list[Callable[[], Awaitable[None]]] = []
    if shared_idempotency is not None:
        keeper = SharedIdempotencyKeeper(
            shared_idempotency, message_log.recent_client_ids, window_s=settings.idempotency_window_s
        )
        keeper.start()
        stoppers.append(keeper.close)
    content_filter = ContentFilter(relational, refresh_s=settings.filter_refresh_s)
    await content_filter.reload()
    content_filter.start()
    stoppers.append(content_filter.close)
    conversations = ConversationService(
        relational, relational, group_cache_ttl_s=GROUP_CACHE_TTL_S if settings.distributed else 0.0
    )
    router = MessageRouter(
        conversations=conversations,
        memberships=relational,
        log=message_log,
        sequencer=sequencer,
        ids=Snowflake(settings.node_id),
        clock=clock,
        fanout=fanout,
        idempotency=idempotency,
        max_body_bytes=settings.max_body_bytes,
        shared_idempotency=shared_idempotency,
        idempotency_window_s=settings.idempotency_window_s,
        rate_limiter=rate_limiter,
        user_send_rate_per_s=settings.user_send_rate_per_s,
        content_filter=content_filter,
    )
    auth = AuthService(
        relational,
        jwt_secret=load_or_create_secret(settings.jwt_secret, data_dir / "jwt.secret"),
        admin_key=load_or_create_secret(settings.admin_key, data_dir / "admin.key"),
        access_ttl_s=settings.access_token_ttl_s,
        refresh_ttl_s=settings.refresh_token_ttl_s,
    )
    sync = SyncService(
        conversations=conversations,
        memberships=relational,
        users=relational,
        groups=relational,
        log=message_log,
        clock=clock,
        fanout=fanout,
    )
    operations = MessageOperations(
        conversations=conversations,
        memberships=relational,
        log=message_log,
        router=router,
        clock=clock,
        fanout=fanout,
        recall_window_s=settings.recall_window_s,
        max_body_bytes=settings.max_body_bytes,
        content_filter=content_filter,
    )
    groups = GroupService(
        groups=relational, users=relational, conversations=conversations, router=router, log=message_log, clock=clock
    )
    users = UserService(relational, auth, allow_registration=settings.allow_registration)
    limits = GatewayLimits(
        max_frame_bytes=settings.max_frame_bytes,
        auth_timeout_s=settings.auth_timeout_s,
        rate_per_s=settings.rate_limit_per_s,
        rate_burst=settings.rate_limit_burst,
        send_buffer_bytes=settings.send_buffer_bytes,
        slow_consumer_grace_s=settings.slow_consumer_grace_s,
        heartbeat_s=settings.heartbeat_s,
    )
    relay = fanout if isinstance(fanout, ClusterFanout) else None
    presence = PresenceService(hub.online, debounce_s=settings.presence_debounce_s, relay=relay)
    if relay is not None:
        relay.on_presence = presence.remote
    gateway = GatewayContext(
        auth=auth,
        router=router,
        sync=sync,
        operations=operations,
        status=StatusService(conversations, fanout, typing_interval_s=settings.typing_interval_s),
        presence=presence,
        hub=hub,
        limits=limits,
        json_codec=ServerCodec(Encoding.JSON, max_frame_bytes=settings.max_frame_bytes),
        msgpack_codec=ServerCodec(Encoding.MSGPACK, max_frame_bytes=settings.max_frame_bytes),
        output=OutputBatcher(),
    )
    api = ApiContext(
        auth=auth,
        users=users,
        groups=groups,
        router=router,
        sync=sync,
        operations=operations,
        devices=DeviceService(relational),
        content_filter=content_filter,
        ws_urls=[settings.ws_url],
    )
    return Node(settings, list(databases.values()), hub, gateway, api, router, closers, stoppers)


async def open_relational(
    url: str, sqlite: Callable[[str], SqliteDatabase], closers: list[Callable[[], Awaitable[None]]]
) -> RelationalStore:
    """The relational adapter ``url`` names. The embedded SQLite database migrates itself; a PostgreSQL
    database whose schema is behind is refused (SchemaError: run ``flare migrate``)."""
    if url.startswith("sqlite://"):
        return SqliteRelational(sqlite(url))
    if url.startswith(("postgresql://", "postgres://")):
        from flare_im.backends.relational.postgres import PostgresConfig, PostgresRelational

        store = await PostgresRelational.open(PostgresConfig(url=url))
        closers.append(store.close)
        return store
    raise ValueError(f"unsupported database_url {url!r} (sqlite://, postgresql://)")


def tune_gc(threshold: int) -> None:
    """Collect the youngest generation less often and leave start-up objects out of collections.

    A busy server holds many live objects (messages in flight, futures, connections); with the default
    threshold (700) the collector runs thousands of times a second and walks them. Measured: +40% 1:1
    throughput at 50,000 (docs/performance.md). Reference cycles are still collected.
    """
    if threshold > 0:
        gc.collect()
        gc.freeze()
        _, second, third = gc.get_threshold()
        gc.set_threshold(threshold, second, third)


class _ApiServer(uvicorn.Server):
    """uvicorn inside our loop: signals are ours (graceful shutdown covers both gateways)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.create_server((host, port), reuse_port=False)
    sock.setblocking(False)
    return sock


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM; then stop accepting, tell clients to reconnect, flush, return 0."""
    node = await build_node(settings)
    tune_gc(settings.gc_threshold)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    roles = settings.role_set
    ws_server = None
    if "gateway" in roles:
        ws_server = await start_ws_server(
            node.gateway,
            settings.host,
            settings.ws_port,
            heartbeat_s=settings.heartbeat_s,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
        )
    # The API runs with every role: its /healthz is what load balancers probe, also for a gateway-only node.
    api_sock = _listen(settings.host, settings.api_port)
    config = uvicorn.Config(
        build_api(node.api),
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or 1,
    )
    api_server = _ApiServer(config)
    api_task = asyncio.create_task(api_server.serve(sockets=[api_sock]))
    while not api_server.started and not api_task.done():  # noqa: ASYNC110 - uvicorn exposes a flag only
        await asyncio.sleep(0.01)
    if api_task.done():
        await api_task  # surfaces the start-up error
        return 1
    ws_port = ws_server.sockets[0].getsockname()[1] if ws_server is not None else 0
    api_port = api_sock.getsockname()[1]
    log.info(
        "flare ready: api http://%s:%d  ws ws://%s:%d/v1/ws  data %s",
        settings.host,
        api_port,
        settings.host,
        ws_port,
        Path(settings.data_dir).resolve(),
    )
    print(f"flare ready api=http://{settings.host}:{api_port} ws=ws://{settings.host}:{ws_port}/v1/ws", flush=True)
    if ready is not None:
        ready.set()

    await stop.wait()
    log.info("shutting down: %d connections", len(node.hub))
    node.gateway.accepting = False
    if ws_server is not None:
        ws_server.close()
    in_flight = list(node.gateway.in_flight)
    if in_flight:  # let requests already received finish, so their acks reach the clients
        await asyncio.wait(in_flight, timeout=settings.shutdown_grace_s)
    told = node.hub.kick_all(CloseCode.SERVER_RESTART, "server restarting", retry_after_ms=1000)
    api_server.should_exit = True
    await api_task
    await node.close()
    log.info("stopped (%d clients told to reconnect)", told)
    return 0
