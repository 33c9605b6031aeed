"""``/metrics``, ``/healthz`` and ``/readyz`` over HTTP: on the REST API, and on a small listener of their own
(``--metrics-port``) for the workers, which have no API, and for nodes that keep metrics off the public port.

Also the REST middleware that gives every request an id (``X-Request-ID``, taken from the client when it is
a plain token, else made here), puts it on every log line of the request, and counts requests by status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flare_im.observability.health import Health
from flare_im.observability.logs import bind, unbind
from flare_im.observability.metrics import CONTENT_TYPE, PREFIX, Source, exposition, histogram
from flare_im.observability.stats import Counts, Histogram

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
REQUEST_HEAD_LIMIT = 8192  # bytes of request line and headers the listener reads
REQUEST_TIMEOUT_S = 5.0


def install_observability_routes(app: FastAPI, registry: CollectorRegistry, health: Health) -> None:
    """``/metrics`` and ``/readyz`` on the REST API (``/healthz`` is api/http.py's)."""

    @app.get("/metrics", tags=["service"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(exposition(registry), media_type=CONTENT_TYPE)

    @app.get("/readyz", tags=["service"], include_in_schema=False)
    async def readyz() -> Response:
        ok, answer = await health.ready()
        return Response(json.dumps(answer), status_code=200 if ok else 503, media_type="application/json")


class HttpStats:
    __slots__ = ("seconds", "statuses")

    def __init__(self) -> None:
        self.statuses = Counts()  # (method, status class or code)
        self.seconds = Histogram()


def http_source(stats: HttpStats) -> Source:
    def source() -> Iterator[Metric]:
        requests = CounterMetricFamily(PREFIX + "http_requests", "REST requests by status code", labels=["status"])
        for status, n in stats.statuses.snapshot():
            requests.add_metric([str(status)], n)
        yield requests
        yield histogram("http_request_seconds", "REST request time, first byte in to last byte out")(stats.seconds)

    return source


class RequestContext:
    """ASGI middleware: request id on the response and the log lines, and the request's status counted."""

    def __init__(self, app: ASGIApp, stats: HttpStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.fullmatch(candidate):
                    request_id = candidate
                break
        request_id = request_id or uuid.uuid4().hex[:16]
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        token = bind(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            unbind(token)
            self.stats.statuses.add(status or 500)
            self.stats.seconds.observe(time.perf_counter() - started)


# ------------------------------------------------------------------------ the listener of its own


async def start_metrics_server(host: str, port: int, registry: CollectorRegistry, health: Health) -> asyncio.Server:
    """``GET /metrics``, ``/healthz``, ``/readyz`` on ``host:port``; one request per connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            status, content_type, body = await _answer(head, registry, health)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        head_out = (
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        try:
            writer.write(head_out.encode() + (b"" if head.startswith(b"HEAD ") else body))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=REQUEST_HEAD_LIMIT)


_STATUS = {200: "200 OK", 404: "404 Not Found", 405: "405 Method Not Allowed", 503: "503 Service Unavailable"}


async def _answer(head: bytes, registry: CollectorRegistry, health: Health) -> tuple[str, str, bytes]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) == 3 else ("", "")
    js = "application/json"
    if path not in ("/metrics", "/healthz", "/readyz"):
        return _STATUS[404], js, b'{"error":"not found"}'
    if method not in ("GET", "HEAD"):
        return _STATUS[405], js, b'{"error":"method not allowed"}'
    if path == "/metrics":
        return _STATUS[200], CONTENT_TYPE, exposition(registry)
    if path == "/healthz":
        return _STATUS[200], js, b'{"status":"ok"}'
    ok, answer = await health.ready()
    return _STATUS[200 if ok else 503], js, json.dumps(answer).encode()


def metrics_server_port(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port
