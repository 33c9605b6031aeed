"""The ceiling: a bare picows relay with no auth, seq or storage.

A client connects to ``/?user=<id>``; a frame ``{"to": "<id>", "n": <int>, ...}`` is forwarded as is to that
user's connection and acknowledged to the sender with ``{"a": <n>}``. That is the least work a relay
with acks can do in Python, so Flare's throughput divided by this one's, measured in the same run on the
same core, says how much the IM features cost.

Run: ``python -m flare_im.benchmark.relay --port 9001`` (prints ``relay ready <port>``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from urllib.parse import parse_qs, urlsplit

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server


class _Envelope(msgspec.Struct):
    to: str
    n: int


_decode = msgspec.json.Decoder(_Envelope).decode


class _RelayConnection(WSListener):
    def __init__(self, routes: dict[str, WSTransport], user: str) -> None:
        self._routes = routes
        self._user = user

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._routes[self._user] = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._routes.get(self._user) is transport:
            del self._routes[self._user]

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            env = _decode(payload)
            target = self._routes.get(env.to)
            if target is not None:
                target.send(WSMsgType.TEXT, payload)
            transport.send(WSMsgType.TEXT, b'{"a":%d}' % env.n)
        elif frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def run_relay(host: str, port: int) -> None:
    routes: dict[str, WSTransport] = {}

    def factory(request: WSUpgradeRequest) -> _RelayConnection | None:
        query = parse_qs(urlsplit(request.path.decode("latin-1")).query)
        users = query.get("user")
        return _RelayConnection(routes, users[0]) if users else None

    server = await ws_create_server(factory, host, port, enable_auto_ping=False, logger_name="relay")
    print(f"relay ready {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="bare picows relay (benchmark ceiling)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    import uvloop

    uvloop.run(run_relay(args.host, args.port))


if __name__ == "__main__":
    main()
