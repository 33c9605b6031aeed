"""How app.py wires the gRPC API into a node: the event feed on the fan-out, and the server on ``grpc_port``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from flare_im.config import Settings
from flare_im.grpc_api.events import EventFeed, KafkaEventSource, TappedFanout
from flare_im.grpc_api.guard import AdminGuard
from flare_im.grpc_api.server import SERVICE, GrpcServer, GrpcTls, start_grpc_server
from flare_im.grpc_api.service import FlareService, GrpcContext
from flare_im.services.router import Fanout

log = logging.getLogger("flare")


def tap_events(
    settings: Settings, fanout: Fanout, closers: list[Callable[[], Awaitable[None]]]
) -> tuple[EventFeed, Fanout]:
    """The feed of ``Subscribe`` and the fan-out the services use (grpc_api/events.py: one node taps its own
    fan-out; several nodes read the messages topic, and the fan-out stays as it is)."""
    feed = EventFeed()
    if not settings.distributed:
        return feed, TappedFanout(fanout, feed)
    from flare_im.backends.queue.kafka import kafka_config_from_url

    source = KafkaEventSource(
        feed,
        kafka_config_from_url(settings.queue_url).bootstrap_servers,
        settings.messages_topic,
        client_id=f"flare-events-{settings.node_id}",
    )
    feed.source = source
    closers.insert(0, source.close)
    return feed, fanout


async def start_grpc(settings: Settings, ctx: GrpcContext) -> GrpcServer:
    tls = None
    if settings.grpc_tls_cert:
        tls = GrpcTls(settings.grpc_tls_cert, settings.grpc_tls_key, settings.grpc_client_ca)
    guard = AdminGuard(ctx.api, SERVICE)
    server = await start_grpc_server(FlareService(ctx), guard, settings.host, settings.grpc_port, tls=tls)
    mode = "mutual TLS" if settings.grpc_client_ca else "TLS" if tls is not None else "plaintext"
    log.info("gRPC API on %s:%d (%s)", settings.host, server.port, mode)
    return server
