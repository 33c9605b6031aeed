"""Liveness and readiness, the same on every role.

``/healthz``: the process answers HTTP (a hung or dead one does not). ``/readyz``: the process should get
traffic: it is not draining, and every backend it was configured with answers: SQLite files (a read), Redis
(``PING``), ClickHouse over HTTP (``/ping``), PostgreSQL and Kafka (a TCP connection to the server, to one of
the brokers). Each check has ``CHECK_TIMEOUT_S``; they run at once. A check's failure names the backend and
the error class, never a URL (URLs carry passwords).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

Check = Callable[[], Awaitable[None]]  # returns when the backend answers; raises otherwise
CHECK_TIMEOUT_S = 2.0
CACHE_S = 0.5  # answers this fresh are reused: many probes (balancers, Prometheus) cost one round of checks


class Health:
    def __init__(self, checks: dict[str, Check] | None = None, *, draining: Callable[[], bool] = lambda: False) -> None:
        self.checks: dict[str, Check] = dict(checks or {})
        self._draining = draining
        self.last_ready = False
        self._cached: tuple[float, bool, dict[str, Any]] | None = None
        self._running: asyncio.Future[tuple[bool, dict[str, Any]]] | None = None

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """(ready?, the JSON answer): ``{"status": "ready"|"not ready", "draining": bool, "checks": {...}}``."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < CACHE_S and not self._draining():
            return cached[1], cached[2]
        if self._running is None:
            self._running = asyncio.ensure_future(self._check())
            self._running.add_done_callback(self._done)
        return await asyncio.shield(self._running)

    def _done(self, _: asyncio.Future[tuple[bool, dict[str, Any]]]) -> None:
        self._running = None

    async def _check(self) -> tuple[bool, dict[str, Any]]:
        names = list(self.checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self.checks[n](), CHECK_TIMEOUT_S) for n in names), return_exceptions=True
        )
        checks = {
            n: "ok" if r is None else f"{type(r).__name__}" + (f": {r}" if isinstance(r, CheckFailed) else "")
            for n, r in zip(names, results, strict=True)
        }
        draining = self._draining()
        ok = not draining and all(v == "ok" for v in checks.values())
        answer = {"status": "ready" if ok else "not ready", "draining": draining, "checks": checks}
        self.last_ready = ok
        self._cached = (time.monotonic(), ok, answer)
        return ok, answer


class CheckFailed(Exception):
    """A backend answered, but not as it should (its message is safe to show)."""


# ------------------------------------------------------------------------------------------ checks


def host_ports(url: str, default_port: int) -> list[tuple[str, int]]:
    """``scheme://[user:pass@]h1:p1[,h2:p2]/...`` -> [(h1, p1), (h2, p2)]."""
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    out: list[tuple[str, int]] = []
    for part in (p.strip() for p in netloc.split(",")):
        if part.startswith("["):  # [IPv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest.lstrip(":")
        elif part.count(":") == 1:
            host, port = part.split(":")
        else:
            host, port = part, ""
        out.append((host or "localhost", int(port) if port else default_port))
    return out


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def tcp_check(addresses: Sequence[tuple[str, int]]) -> Check:
    """Reachable when one of ``addresses`` accepts a TCP connection."""

    async def check() -> None:
        error: BaseException | None = None
        for host, port in addresses:
            try:
                _, writer = await _connect(host, port)
            except OSError as exc:
                error = exc
                continue
            await _close(writer)
            return
        raise error if error is not None else CheckFailed("no address")

    return check


def redis_check(url: str) -> Check:
    ((host, port),) = host_ports(url, 6379)[:1]

    async def check() -> None:
        reader, writer = await _connect(host, port)
        try:
            writer.write(b"PING\r\n")
            reply = await reader.readline()
        finally:
            await _close(writer)
        # A password-protected Redis answers -NOAUTH: it is up, which is what this checks.
        if not reply.startswith((b"+PONG", b"-NOAUTH")):
            raise CheckFailed(f"unexpected reply {reply[:40]!r}")

    return check


def clickhouse_check(url: str) -> Check:
    ((host, port),) = host_ports(url, 8123)[:1]

    async def check() -> None:
        reader, writer = await _connect(host, port)
        try:
            writer.write(f"GET /ping HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            answer = await reader.read(4096)
        finally:
            await _close(writer)
        if not answer.startswith(b"HTTP/1.") or b" 200 " not in answer.split(b"\r\n", 1)[0]:
            raise CheckFailed("/ping did not answer 200")

    return check


def sqlite_check(db: Any) -> Check:
    async def check() -> None:
        db.fetchone("SELECT 1")

    return check


def url_checks(
    *, database_url: str = "", message_store_url: str = "", cache_url: str = "", queue_url: str = ""
) -> dict[str, Check]:
    """The checks of the distributed backends named by these URLs (empty or embedded ones are left out)."""
    checks: dict[str, Check] = {}
    if database_url.startswith(("postgresql://", "postgres://")):
        checks["postgresql"] = tcp_check(host_ports(database_url, 5432))
    if message_store_url.startswith("clickhouse://"):
        checks["clickhouse"] = clickhouse_check(message_store_url)
    if cache_url.startswith(("redis://", "rediss://")):
        checks["redis"] = (
            redis_check(cache_url) if cache_url.startswith("redis://") else tcp_check(host_ports(cache_url, 6379))
        )
    if queue_url.startswith("kafka://"):
        checks["kafka"] = tcp_check(host_ports(queue_url, 9092))
    return checks
