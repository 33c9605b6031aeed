"""The message gateway's WebSocket listener (picows): routes the upgrade request, picks the encoding."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any
from urllib.parse import parse_qs, urlsplit

from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server

from flare_im.gateway.connection import ClientConnection, GatewayContext
from flare_im.protocol.codec import Encoding

WS_PATH = "/v1/ws"
SUBPROTOCOLS = {"flare.v1.json": Encoding.JSON, "flare.v1.msgpack": Encoding.MSGPACK}
# Frames up to this size reach the codec, which answers oversize ones (> max_frame_bytes) with error 413;
# larger ones are refused by the transport itself (close 1009).
HARD_FRAME_LIMIT_FACTOR = 16
# picows' per-connection read buffer starts at this size and grows for larger frames: most IM frames are
# small, and idle connections should cost little memory (default 16 KiB).
READ_BUFFER_BYTES = 1024


class PeerFaultsAsWarnings(logging.LoggerAdapter):  # type: ignore[type-arg]
    """picows' logger, with the protocol violations of a client at WARNING instead of ERROR.

    picows logs a frame it cannot accept (over the hard size limit: close 1009; unmasked; a bad opcode) at
    ERROR. Such a frame is the client's doing, and ERROR lines are what operators alert on
    (docs/operations.md): no client behaviour may produce one. Failures of our own code stay at ERROR.
    """

    PEER_FAULTS = ("WS parser error",)  # picows' message for a frame the client got wrong

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if level >= logging.ERROR and isinstance(msg, str) and msg.startswith(self.PEER_FAULTS):
            level = logging.WARNING
        super().log(level, msg, *args, **kwargs)


def _choose(request: WSUpgradeRequest) -> tuple[Encoding, str | None] | None:
    """Encoding and the subprotocol to confirm, or None for a bad request."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    for name in offered:
        if name in SUBPROTOCOLS:
            return SUBPROTOCOLS[name], name
    if offered:
        return None
    query = parse_qs(urlsplit(request.path.decode("latin-1")).query)
    wanted = query.get("encoding", ["json"])[0]
    try:
        return Encoding(wanted), None
    except ValueError:
        return None


async def start_ws_server(
    ctx: GatewayContext,
    sock: socket.socket,
    *,
    heartbeat_s: float,
    heartbeat_timeout_s: float,
    tls: ssl.SSLContext | None = None,
) -> asyncio.Server:
    def factory(request: WSUpgradeRequest) -> ClientConnection | WSUpgradeResponseWithListener | None:
        path = urlsplit(request.path.decode("latin-1")).path
        if path != WS_PATH:
            return None
        if not ctx.accepting:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(503, b"shutting down"), None)
        chosen = _choose(request)
        if chosen is None:
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(
                    400, b"unsupported encoding: offer flare.v1.json or flare.v1.msgpack"
                ),
                None,
            )
        encoding, subprotocol = chosen
        listener = ClientConnection(ctx, encoding)
        if subprotocol is None:
            return listener
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": subprotocol}), listener
        )

    server: asyncio.Server = await ws_create_server(
        factory,
        sock=sock,
        enable_auto_ping=True,
        auto_ping_idle_timeout=heartbeat_s,
        auto_ping_reply_timeout=heartbeat_timeout_s,
        max_frame_size=ctx.limits.max_frame_bytes * HARD_FRAME_LIMIT_FACTOR,
        websocket_handshake_timeout=10,
        read_buffer_init_size=READ_BUFFER_BYTES,
        logger_name=PeerFaultsAsWarnings(logging.getLogger("picows.gateway"), {}),
        ssl=tls,
        ssl_handshake_timeout=10 if tls is not None else None,
    )
    return server
