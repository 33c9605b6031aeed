"""Composition root: builds backends from URLs, services from backends, and runs both gateways."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from flare_im.admin_node import open_admin_store, start_admin
from flare_im.api.headers import SecurityHeaders, with_cors
from flare_im.api.http import ApiContext, build_api
from flare_im.api.limits import BodyLimit, BodyLimits, guarded_h11, has_valid_credentials
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
from flare_im.media_node import media_body_limit, media_credentials, open_media_store, start_media
from flare_im.netlimits import Network, PeerConnections, networks_of
from flare_im.notify_node import start_push
from flare_im.observability import tracing
from flare_im.observability.endpoints import RequestContext, install_observability_routes
from flare_im.observability.metrics import Source
from flare_im.observability.sources import push_source
from flare_im.observability.wiring import cluster_sources
from flare_im.observability.wiring import for_node as observability_for_node
from flare_im.protocol.codec import Encoding, ServerCodec
from flare_im.protocol.errors import CloseCode
from flare_im.safety_node import open_safety_store, start_safety
from flare_im.search_node import archived_view, open_search, search_service
from flare_im.services.abuse import AbuseGuard, AuthLimits
from flare_im.services.auth import AuthService, default_hash_pool, load_or_create_secret, new_hasher
from flare_im.services.content_filter import ContentFilter
from flare_im.services.conversations import ConversationService
from flare_im.services.devices import DeviceService
from flare_im.services.groups import GroupService
from flare_im.services.idempotency import IdempotencyCache, SharedIdempotencyKeeper
from flare_im.services.notify import NotifyingFanout, Publish
from flare_im.services.operations import MessageOperations
from flare_im.services.presence import PresenceService
from flare_im.services.router import WINDOW_SLACK_MS, Fanout, MessageRouter
from flare_im.services.signing_keys import previous_secrets
from flare_im.services.status import StatusService
from flare_im.services.sync import SyncService
from flare_im.services.users import UserService, warn_identity_flags
from flare_im.services.webhooks import DropReportingJobs, WebhookFanout
from flare_im.webhook_node import open_webhook_store, start_webhooks

if TYPE_CHECKING:  # imported when grpc_port is set (protobuf and grpc load only then)
    from flare_im.grpc_api.service import GrpcContext

log = logging.getLogger("flare")

# Several nodes: how long a write of another node may take (sync positions stay this far behind), and how
# long a group's member list is trusted before it is read again (another node may have changed it).
PEERS_LAG_US = 2_000_000
GROUP_CACHE_TTL_S = 2.0
SHUTDOWN_LINGER_S = 1.0  # at exit, how long closed connections may take to close their side (gateway/linger.py)


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
    grpc: GrpcContext | None = None  # the gRPC API's services, when grpc_port is set
    metric_sources: list[Source] = field(default_factory=list)  # /metrics of what the build made (cluster, push)

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
    metric_sources: list[Source] = []

    def sqlite(url: str, *, page_size: int | None = None) -> SqliteDatabase:
        path = parse_sqlite_url(url)
        if path not in databases:
            config = SqliteConfig(
                path=path,
                synchronous=settings.sqlite_synchronous.upper(),
                page_size=page_size or settings.sqlite_page_size,
            )
            databases[path] = SqliteDatabase(config)
        return databases[path]

    relational = await open_relational(settings.effective_database_url, sqlite, closers)
    media_store = await open_media_store(settings.effective_database_url, sqlite, closers)
    admin_store = await open_admin_store(settings.effective_database_url, sqlite, closers)
    safety_store = await open_safety_store(settings.effective_database_url, sqlite, closers)
    webhook_store = await open_webhook_store(settings.effective_database_url, sqlite, closers)
    message_log: MessageLog
    sequencer: Sequencer
    fanout: Fanout
    shared_idempotency: IdempotencyStore | None = None
    rate_limiter: RateLimiter = MemoryRateLimiter()
    cluster_publish: Publish | None = None
    if settings.distributed:
        from flare_im.distributed import open_cluster

        cluster = await open_cluster(settings, closers)
        metric_sources.extend(cluster_sources(cluster))
        message_log, sequencer, fanout, hub = cluster.log, cluster.sequencer, cluster.fanout, cluster.hub
        shared_idempotency = cluster.idempotency
        cluster_publish = cluster.publish
        rate_limiter = cluster.rate_limiter
    else:
        if not settings.effective_message_store_url.startswith("sqlite://"):
            raise ValueError(f"unsupported message_store_url {settings.effective_message_store_url!r} on one node")
        # The log answers idempotency lookups from memory as far back as the router asks (services/router.py).
        horizon_s = settings.idempotency_window_s + WINDOW_SLACK_MS / 1000
        sqlite_log = SqliteMessageLog(sqlite(settings.effective_message_store_url), key_horizon_s=horizon_s)
        from flare_im.archive.lock import has_archived_parts, hold_shared

        closers.append(hold_shared(data_dir))  # flare archive run refuses while it is held
        message_log = sqlite_log
        log_db = sqlite(settings.effective_message_store_url)
        if has_archived_parts(log_db.reader):  # pyarrow (the archive extra) is imported only then
            try:
                from flare_im.archive.reader import open_archived
            except ImportError as exc:
                raise ValueError(f"history was archived here; reading it needs flare-im[archive] ({exc})") from None
            message_log = await open_archived(sqlite_log, log_db, settings, closers)
        sequencer = MemorySequencer(sqlite_log.max_seq, max_counters=settings.sequencer_cache_size)
        hub = Hub()
        fanout = hub
    archive = archived_view(cluster.store if settings.distributed else message_log)
    search = await open_search(settings, sqlite, archive)  # before the databases start
    if search is not None and (search_metrics := search.metrics()) is not None:
        metric_sources.append(search_metrics)
    message_log = search.feeding(message_log) if search is not None else message_log
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
    if search is not None:
        stoppers.append(search.start())
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
        relational,
        relational,
        group_cache_ttl_s=GROUP_CACHE_TTL_S if settings.distributed else 0.0,
        max_group_members=settings.group_cache_members,
        max_direct=settings.direct_cache_size,
    )
    safety = await start_safety(settings, safety_store, conversations.cached_role, stoppers)
    delivering = fanout  # the hub or the cluster's fan-out; the services get it decorated with notifications
    hooks = await start_webhooks(settings, webhook_store, cluster_publish, stoppers)  # before push: its drops
    push = await start_push(
        settings,
        relational,
        message_log,
        hub,
        fanout,
        cluster_publish,
        stoppers,
        jobs=DropReportingJobs(relational, hooks.webhooks),
    )
    if push is not None and push.worker is not None:
        metric_sources.append(push_source(push.worker))
    if push is not None:
        fanout = NotifyingFanout(fanout, push.notifier)
    fanout = WebhookFanout(fanout, hooks.webhooks)  # after-events of stored messages and operations
    feed = None
    if settings.grpc_port:  # the Subscribe streams see every stored event (off: the fan-out is left as it is)
        from flare_im.grpc_api.node import tap_events

        feed, fanout = tap_events(settings, fanout, closers)
    ids = Snowflake(settings.node_id)
    router = MessageRouter(
        conversations=conversations,
        memberships=relational,
        log=message_log,
        sequencer=sequencer,
        ids=ids,
        clock=clock,
        fanout=fanout,
        idempotency=idempotency,
        max_body_bytes=settings.max_body_bytes,
        shared_idempotency=shared_idempotency,
        idempotency_window_s=settings.idempotency_window_s,
        rate_limiter=rate_limiter,
        user_send_rate_per_s=settings.user_send_rate_per_s,
        content_filter=content_filter,
        safety=safety.cache,
        spam=safety.spam_guard(settings, rate_limiter, relational),
        webhooks=hooks.webhooks,
    )
    hasher = new_hasher()
    auth = AuthService(
        relational,
        jwt_secret=load_or_create_secret(settings.jwt_secret, data_dir / "jwt.secret"),
        previous_jwt_secrets=previous_secrets(settings.jwt_previous_secrets, data_dir),
        admin_key=load_or_create_secret(settings.admin_key, data_dir / "admin.key"),
        access_ttl_s=settings.access_token_ttl_s,
        refresh_ttl_s=settings.refresh_token_ttl_s,
        hasher=hasher,
        hash_pool=default_hash_pool(hasher, settings.hash_concurrency, settings.hash_wait_s),
        cache_ttl_s=settings.auth_cache_ttl_s,
    )
    await warn_identity_flags(relational)
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
        safety=safety.cache,
    )
    joins = safety.join_service(
        settings,
        conversations,
        router,
        message_log,
        clock,
        delivering.deliver_frame if isinstance(delivering, ClusterFanout) else hub.deliver_frame,
    )
    url_secret = load_or_create_secret(settings.jwt_secret, data_dir / "jwt.secret")  # shared by every node
    media = await start_media(settings, media_store, conversations, url_secret, closers, stoppers)
    router.media = operations.media = media
    media.recall_message = operations.recall_for_moderation
    groups = GroupService(
        groups=relational,
        users=relational,
        conversations=conversations,
        router=router,
        log=message_log,
        clock=clock,
        max_members=settings.group_max_members,
        limit_of=joins.limit_of,
    )
    limits_of_auth = AuthLimits(
        login_ip_limit=settings.login_ip_limit,
        login_ip_window_s=settings.login_ip_window_s,
        login_failure_limit=settings.login_failure_limit,
        login_failure_window_s=settings.login_failure_window_s,
        register_ip_limit=settings.register_ip_limit,
        register_ip_window_s=settings.register_ip_window_s,
    )
    users = UserService(
        relational,
        auth,
        registration=settings.registration_mode,
        guard=AbuseGuard(rate_limiter, limits_of_auth),
    )
    limits = GatewayLimits(
        max_frame_bytes=settings.max_frame_bytes,
        auth_timeout_s=settings.auth_timeout_s,
        rate_per_s=settings.rate_limit_per_s,
        rate_burst=settings.rate_limit_burst,
        send_buffer_bytes=settings.send_buffer_bytes,
        slow_consumer_grace_s=settings.slow_consumer_grace_s,
        heartbeat_s=settings.heartbeat_s,
    )
    relay = delivering if isinstance(delivering, ClusterFanout) else None
    presence = PresenceService(
        hub.online, debounce_s=settings.presence_debounce_s, relay=relay, max_last_seen=settings.last_seen_cache_size
    )
    if relay is not None:
        relay.on_presence = presence.remote
    presence.on_local_change = hooks.webhooks.presence
    gateway = GatewayContext(
        auth=auth,
        router=router,
        sync=sync,
        operations=operations,
        status=StatusService(conversations, fanout, typing_interval_s=settings.typing_interval_s, safety=safety.cache),
        presence=presence,
        hub=hub,
        limits=limits,
        json_codec=ServerCodec(Encoding.JSON, max_frame_bytes=settings.max_frame_bytes),
        msgpack_codec=ServerCodec(Encoding.MSGPACK, max_frame_bytes=settings.max_frame_bytes),
        output=OutputBatcher(),
        peers=PeerConnections(settings.ws_connections_per_ip, exempt_from_connection_limits(settings)),
        safety=safety.cache,
    )
    api = ApiContext(
        auth=auth,
        users=users,
        groups=groups,
        router=router,
        sync=sync,
        operations=operations,
        devices=DeviceService(relational, on_change=push.changed if push is not None else None),
        content_filter=content_filter,
        ws_urls=[settings.ws_url],
        trusted_proxies=networks_of(settings.trusted_proxies),
        notifications=push.api if push is not None else None,
        media=media,
        webhooks=hooks.webhooks,
        search=search_service(search, conversations, relational),
        safety=safety.services(
            settings,
            relational,
            conversations,
            message_log,
            router,
            delivering.deliver_frame if isinstance(delivering, ClusterFanout) else hub.deliver_frame,
        ),
    )
    api.admin = await start_admin(
        settings,
        store=admin_store,
        relational=relational,
        auth=auth,
        users=users,
        router=router,
        conversations=conversations,
        message_log=message_log,
        hub=hub,
        fanout=delivering,
        ids=ids,
        log_db=None if settings.distributed else sqlite(settings.effective_message_store_url),
        log_store=cluster.store if settings.distributed else None,
        cluster_publish=cluster_publish,
        root_key=load_or_create_secret(settings.admin_key, data_dir / "admin.key"),
        stoppers=stoppers,
    )
    grpc = None
    if feed is not None:
        from flare_im.grpc_api.service import GrpcContext

        grpc = GrpcContext(api, conversations, feed, f"node-{settings.node_id}", settings.max_body_bytes)
    return Node(
        settings,
        list(databases.values()),
        hub,
        gateway,
        api,
        router,
        closers,
        stoppers,
        grpc,
        metric_sources=metric_sources,
    )


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


def tune_gil(interval_ms: float) -> None:
    """Let a thread waiting for the GIL have it sooner (0 keeps Python's 5 ms).

    The event loop shares the GIL with the SQLite writer threads (the store's group commit, the search
    index's follower). Whichever holds it keeps it until the interval runs out, so with 5 ms a message
    arriving while the search index writes a batch, or an ack whose commit just returned, waits up to that
    long: the tail of a steady load (docs/performance.md, long runs). 1 ms cut that tail and also the CPU.
    """
    if interval_ms > 0:
        sys.setswitchinterval(interval_ms / 1000)


def exempt_from_connection_limits(settings: Settings) -> tuple[Network, ...]:
    """Load balancers carry many clients on one address: trusted proxies are never capped, nor what the
    operator lists in connection_limit_exempt."""
    return networks_of(settings.trusted_proxies, settings.connection_limit_exempt)


class _ApiServer(uvicorn.Server):
    """uvicorn inside our loop: signals are ours (graceful shutdown covers both gateways)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The WebSocket's TLS context from ``tls_cert``/``tls_key`` (TLS 1.2 and up; the API's uvicorn loads the
    same files itself). A bad file fails the start, before any port is opened."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def tls_faults_as_warnings(loop: asyncio.AbstractEventLoop) -> None:
    """A peer that speaks plain text to a TLS port, offers an old protocol or distrusts the certificate fails
    its handshake: the loop reports that as an error with a traceback, but it is the client's fault, which is
    logged as a warning and nothing more (docs/operations.md). Anything else goes to the default handler."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", ""))
        # uvloop may hand over the exception's class rather than an instance
        tls_fault = isinstance(exc, ssl.SSLError) or (isinstance(exc, type) and issubclass(exc, ssl.SSLError))
        if tls_fault or message.startswith(("SSL handshake failed", "SSL error")):
            log.warning("TLS with a client failed: %s", message.splitlines()[0] if message else exc)
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


class ListenError(Exception):
    """A port the server cannot listen on (taken, or not allowed): said in one line, not a traceback."""


def _listen(host: str, port: int, what: str) -> socket.socket:
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port} for the {what}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM; then stop accepting, tell clients to reconnect, flush, return 0."""
    tls = server_tls_context(settings)
    roles = settings.role_set
    # The ports first: one taken fails the start with a clear error before anything else has started.
    ws_sock = _listen(settings.host, settings.ws_port, "WebSocket") if "gateway" in roles else None
    api_sock = _listen(settings.host, settings.api_port, "API")
    tracing.configure(settings, "serve")
    node = await build_node(settings)
    tune_gc(settings.gc_threshold)
    tune_gil(settings.gil_switch_interval_ms)
    obs = observability_for_node(settings, node)
    obs.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if tls is not None:
        tls_faults_as_warnings(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    ws_server = None
    if ws_sock is not None:
        ws_server = await start_ws_server(
            node.gateway,
            ws_sock,
            heartbeat_s=settings.heartbeat_s,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            tls=tls,
        )
    # The API runs with every role: its /healthz is what load balancers probe, also for a gateway-only node.
    body_limits = BodyLimits(
        anonymous=settings.api_anonymous_body_bytes,
        default=settings.api_body_bytes,
        by_prefix=(("/v1/admin/", max(settings.api_body_bytes, 4 * 1024 * 1024)), media_body_limit(settings)),
    )
    api_peers = PeerConnections(settings.api_connections_per_ip, exempt_from_connection_limits(settings))
    api_app = build_api(node.api)
    install_observability_routes(api_app, obs.registry, obs.health)
    limited = BodyLimit(api_app, body_limits, media_credentials(has_valid_credentials, node.api))
    headed = SecurityHeaders(with_cors(limited, settings.cors_origins.split(",")), hsts=tls is not None)
    api_asgi: Any = RequestContext(headed, obs.http)
    if tracing.ENABLED:  # outermost: the request's log lines, RequestContext's too, carry its span's ids
        api_asgi = tracing.TracingMiddleware(api_asgi)
    config = uvicorn.Config(
        api_asgi,
        http=guarded_h11(api_peers, header_timeout_s=settings.api_header_timeout_s),
        timeout_keep_alive=settings.api_keepalive_s,
        log_level=settings.log_level.lower(),
        log_config=None,  # the process's JSON logging (observability/logs.py), set up by cli.py
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or 1,
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
    )
    api_server = _ApiServer(config)
    api_task = asyncio.create_task(api_server.serve(sockets=[api_sock]))
    while not api_server.started and not api_task.done():  # noqa: ASYNC110 - uvicorn exposes a flag only
        await asyncio.sleep(0.01)
    if api_task.done():
        await api_task  # surfaces the start-up error
        return 1
    if settings.metrics_port:  # /metrics, /healthz, /readyz also on a port of their own
        metrics_port = await obs.listen(settings.host, settings.metrics_port)
        log.info("metrics on http://%s:%d/metrics", settings.host, metrics_port)
    ws_port = ws_server.sockets[0].getsockname()[1] if ws_server is not None else 0
    api_port = api_sock.getsockname()[1]
    http, ws = ("https", "wss") if tls is not None else ("http", "ws")
    grpc_server = None
    if node.grpc is not None:
        from flare_im.grpc_api.node import start_grpc

        grpc_server = await start_grpc(settings, node.grpc)
    log.info(
        "flare ready: api %s://%s:%d  ws %s://%s:%d/v1/ws  data %s",
        http,
        settings.host,
        api_port,
        ws,
        settings.host,
        ws_port,
        Path(settings.data_dir).resolve(),
    )
    print(f"flare ready api={http}://{settings.host}:{api_port} ws={ws}://{settings.host}:{ws_port}/v1/ws", flush=True)
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
    if grpc_server is not None:  # Subscribe streams end; unary calls under way may finish within the grace
        await grpc_server.stop(settings.shutdown_grace_s)
    api_server.should_exit = True
    await api_task
    await node.close()
    await obs.close()
    await node.gateway.lingering.close(SHUTDOWN_LINGER_S)  # the told clients close; the rest are reset
    tracing.shutdown()  # exports the spans still pending
    log.info("stopped (%d clients told to reconnect)", told)
    return 0
