"""What every local provider stand-in shares: an in-process HTTP server (hypercorn, HTTP/1.1 and HTTP/2, TLS
with a self-signed certificate when asked) on 127.0.0.1, a record of the requests it answered, and failures
injected on command (``fail_next``).

A stand-in is an ASGI app (``FakeProvider.__call__``) whose ``handle`` answers one request. ``running(fake)``
serves it on a free port for the duration of an ``async with`` and yields its base URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config, Sockets

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Request:
    """One request as the stand-in saw it (header names lower-case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    http_version: str
    client: tuple[str, int]  # the peer's address: one port per TCP connection

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(value).encode(), {"content-type": "application/json", **(headers or {})})


@dataclass(slots=True)
class Failure:
    status: int
    reason: str = ""
    retry_after: str | None = None


class FakeProvider:
    """Base of the stand-ins: records requests, answers injected failures before ``handle``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []  # every request, answered or failed
        self.accepted: list[Request] = []  # the ones ``handle`` answered with a 2xx
        self.held: list[Request] = []  # requests that waited for ``release`` (see ``hold_after``)
        self.abandoned: list[Request] = []  # held requests whose client went away: never handled
        self._failures: list[Failure] = []
        self._open = asyncio.Event()
        self._open.set()
        self._hold: Callable[[Request], bool] | None = None
        self._passes = 0

    def hold_after(self, count: int, *, only: Callable[[Request], bool] = lambda _request: True) -> None:
        """Let ``count`` more requests for which ``only`` is true through, then hold every later one unanswered
        until ``release`` (other requests pass). A held request whose client goes away meanwhile (a worker killed
        mid-send) is not handled at all: it lands in ``abandoned``, neither accepted nor failed — nothing was
        delivered."""
        self._hold, self._passes = only, count
        self._open.clear()

    def release(self) -> None:
        """Handle the held requests whose client is still there, and every later one at once."""
        self._hold = None
        self._open.set()

    async def _until_open(self, request: Request, receive: Receive) -> bool:
        """Wait while held; False if the client went away first."""
        if self._hold is None or not self._hold(request):
            return True
        if self._passes > 0:
            self._passes -= 1
            return True
        self.held.append(request)
        opened = asyncio.ensure_future(self._open.wait())
        gone = asyncio.ensure_future(receive())  # the body is read: the next message is http.disconnect
        await asyncio.wait({opened, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone.done():
            opened.cancel()
            self.abandoned.append(request)
            return False
        gone.cancel()
        return True

    def fail_next(self, count: int, status: int, reason: str = "", retry_after: str | None = None) -> None:
        """Answer the next ``count`` requests that pass authentication with this error, in the provider's
        error format (``error_response``)."""
        self._failures.extend(Failure(status, reason, retry_after) for _ in range(count))

    def take_failure(self) -> Failure | None:
        return self._failures.pop(0) if self._failures else None

    async def handle(self, request: Request) -> Response:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        path = scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
        request = Request(
            scope["method"],
            path,
            {k.decode().lower(): v.decode() for k, v in scope["headers"]},
            b"".join(chunks),
            scope["http_version"],
            tuple(scope["client"]),
        )
        self.requests.append(request)
        if not await self._until_open(request, receive):
            return
        response = await self.handle(request)
        if 200 <= response.status < 300:
            self.accepted.append(request)
        headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


@dataclass(frozen=True, slots=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost; ``cert_file`` doubles as the CA bundle."""

    cert_file: str
    key_file: str


def self_signed_certificate(directory: Path) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flare push stand-in")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "fake-cert.pem", directory / "fake-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificate(str(cert_file), str(key_file))


class _BoundConfig(Config):
    """Serves on a socket bound before the server starts (port 0: the kernel picks a free one)."""

    def __init__(self, sock: socket.socket, secure: bool) -> None:
        super().__init__()
        self._sock, self._secure = sock, secure

    def create_sockets(self) -> Sockets:
        return Sockets([self._sock] if self._secure else [], [] if self._secure else [self._sock], [])


@contextlib.asynccontextmanager
async def running(
    app: FakeProvider, certificate: Certificate | None = None, port: int = 0, *, max_requests: int = 10_000_000
) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (HTTPS with HTTP/2 when ``certificate`` is given, else plain HTTP/1.1 and h2c)
    until the block ends; yields the base URL. A connection is ended (GOAWAY) after ``max_requests``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    config = _BoundConfig(sock, certificate is not None)
    if certificate is not None:
        config.certfile, config.keyfile = certificate.cert_file, certificate.key_file
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 60.0
    config.keep_alive_max_requests = max_requests  # hypercorn's default ends a connection after 1000 requests
    stop = asyncio.Event()
    host, bound = sock.getsockname()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        await _until_listening(host, bound, task)
        yield f"{'https' if certificate else 'http'}://{host}:{bound}"
    finally:
        stop.set()
        await task


async def _until_listening(host: str, port: int, task: asyncio.Task[None]) -> None:
    for _ in range(1000):
        if task.done():
            task.result()  # raises what stopped the server
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"the stand-in on {host}:{port} did not start")


def temporary_directory() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="flare-push-fake-")
