"""A lean HTTP/1.1 client for webhook requests: keep-alive connections per origin, one request at a time on each,
over asyncio streams (TLS with the system's CAs plus ``ca_file``).

Why not httpx: a ``before_send`` request is on the send path, and httpx costs 2-3 ms of CPU per request (its pool,
its models; measured in docs/integration.md §8.1), and a request cancelled at its timeout could leave httpcore's
pool spinning. Here a request that times out (the caller cancels it) closes its connection; nothing else is shared.

What it does not do: redirects (a 3xx is an answer like any other), proxies, HTTP/2, ``Expect: 100-continue``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024  # answers longer than this are an error (before_send reads the body)


class HttpError(Exception):
    """The exchange failed: connection refused or reset, TLS error, an answer that is not HTTP/1.x."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # names lower-case
    body: bytes


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class WebhookHttpClient:
    def __init__(self, *, ca_file: str = "", max_connections_per_origin: int = 64) -> None:
        """``max_connections_per_origin``: requests beyond it wait for a connection (a burst of sends must not
        open a connection each: the receiver's listen backlog would drop them, costing seconds of SYN retries)."""
        self._context = ssl.create_default_context()
        if ca_file:
            self._context.load_verify_locations(cafile=ca_file)
        self._max_connections = max_connections_per_origin
        self._idle: dict[tuple[str, str, int], deque[_Conn]] = {}
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        """POST ``body``; the caller bounds the time (``asyncio.timeout``): a cancelled request's connection is
        closed. A kept-alive connection the server closed meanwhile is retried once on a new one."""
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "https"
        host = parts.hostname or ""
        origin = (parts.scheme, host, parts.port or (443 if secure else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        lines = [f"POST {target} HTTP/1.1", f"host: {netloc}", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        try:
            request = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
        except UnicodeEncodeError as exc:
            raise HttpError(f"a URL or header that is not ASCII: {exc}") from None
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self._max_connections)
        async with slots:
            return await self._post(origin, secure, host, request)

    async def _post(self, origin: tuple[str, str, int], secure: bool, host: str, request: bytes) -> Answer:
        idle = self._idle.setdefault(origin, deque())
        while idle:  # a reused connection may have been closed by the server: then try a fresh one
            conn = idle.pop()
            try:
                return await self._exchange(origin, conn, request)
            except (HttpError, OSError):
                continue
        try:
            reader, writer = await self._connect(origin[1], origin[2], secure, host)
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        return await self._exchange(origin, (reader, writer), request)

    async def _connect(self, name: str, port: int, secure: bool, host: str) -> _Conn:
        """A connection to the first of ``name``'s addresses that answers. The lookup is our own and shielded
        from the caller's timeout: uvloop's, inside open_connection, leaves the failure of a lookup whose caller
        gave up unread, which asyncio then logs as an error."""
        lookup = asyncio.ensure_future(asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM))
        lookup.add_done_callback(_read_outcome)
        failure: OSError = OSError(f"no address for {name}")
        for *_, address in await asyncio.shield(lookup):
            try:
                return await asyncio.open_connection(
                    str(address[0]),
                    port,
                    ssl=self._context if secure else None,
                    server_hostname=host if secure else None,
                )
            except OSError as exc:
                failure = exc
        raise failure

    async def _exchange(self, origin: tuple[str, str, int], conn: _Conn, request: bytes) -> Answer:
        reader, writer = conn
        reusable = False
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
            version, _, rest = status_line.partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or not code.isdigit():
                raise HttpError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
            headers: dict[str, str] = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await _read_body(reader, headers, int(code))
            reusable = headers.get("connection", "").lower() != "close" and version != "HTTP/1.0"
            return Answer(int(code), reason, headers, body)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ssl.SSLError,
            ValueError,
        ) as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            idle = self._idle.get(origin)
            if reusable and idle is not None:
                idle.append(conn)
            else:
                writer.close()

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop()[1].close()
        self._idle.clear()


def _read_outcome(lookup: asyncio.Future[Any]) -> None:
    if not lookup.cancelled():
        lookup.exception()


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], status: int) -> bytes:
    if status in (204, 304) or 100 <= status < 200:
        return b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        size = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            length = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if length == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(chunks)
            size += length
            if size > MAX_BODY_BYTES:
                raise HttpError(f"an answer over {MAX_BODY_BYTES} bytes")
            chunks.append(await reader.readexactly(length))
            await reader.readexactly(2)
    length_header = headers.get("content-length")
    if length_header is not None:
        length = int(length_header) if length_header.isdigit() else -1
        if not 0 <= length <= MAX_BODY_BYTES:
            raise HttpError(f"an answer's content-length is {length_header!r}")
        return await reader.readexactly(length)
    headers["connection"] = "close"  # the body runs until the server closes
    body = await reader.read(MAX_BODY_BYTES + 1)
    while len(body) <= MAX_BODY_BYTES and (more := await reader.read(MAX_BODY_BYTES + 1 - len(body))):
        body += more
    if len(body) > MAX_BODY_BYTES:
        raise HttpError(f"an answer over {MAX_BODY_BYTES} bytes")
    return body
