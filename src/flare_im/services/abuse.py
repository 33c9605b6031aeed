"""Limits on what login and registration may cost: attempts per client IP and per account, and a bounded pool
for the argon2 hashes (each takes 64 MiB and tens of milliseconds of a core).

* Login: ``login_ip_limit`` attempts per ``login_ip_window_s`` from one client IP, and ``login_failure_limit``
  failed logins per ``login_failure_window_s`` for one account (counted per normalised username, whether or
  not it exists, so the limit does not reveal which accounts exist). Over either: error 429 with
  ``detail.retry_after_s`` (REST: also the ``Retry-After`` header), before any hash is computed.
* Registration: ``register_ip_limit`` per ``register_ip_window_s`` from one client IP.
* Hashing: at most ``concurrency`` argon2 operations run at once; a request waits up to ``wait_s`` for a slot,
  and at most ``8 x concurrency`` requests wait. Past either bound it gets error 503 (retryable) at once rather
  than queueing without bound. Memory for hashing stays below ``concurrency x`` the hash's memory cost.

The counts are token buckets in the rate-limiter port: in-process on one node, in Redis with several nodes, so a
cluster shares them. The trade-off of a per-account limit: someone who knows a username can slow that user's
logins (never lock them out for longer than one refill, ``window / limit``); the per-IP limit bounds what one
client can do to many accounts. Behind a proxy every client has the proxy's address unless ``trusted_proxies``
names it: then the last address of ``X-Forwarded-For`` that is not a trusted proxy is the client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from flare_im.backends.ratelimit.base import RateLimiter
from flare_im.netlimits import Network
from flare_im.protocol.errors import ErrorCode, FlareError

T = TypeVar("T")
MAX_WAITING_PER_SLOT = 8


class RetryLater(FlareError):
    """A retryable error that says when to retry: ``detail.retry_after_s`` (whole seconds, at least 1); REST
    answers it with a ``Retry-After`` header too."""

    def __init__(self, code: ErrorCode, message: str, wait_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(wait_s))
        super().__init__(code, message, retryable=True, detail={"retry_after_s": self.retry_after_s})


def retry_later(code: ErrorCode, message: str, wait_s: float) -> RetryLater:
    return RetryLater(code, message, wait_s)


# ---------------------------------------------------------------------------- client addresses


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy and sent ``X-Forwarded-For``; then
    the rightmost address there that is not a trusted proxy (the ones left of it are the client's to forge)."""
    address = peer or "unknown"
    if not trusted or not forwarded_for or not _trusted(address, trusted):
        return address
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        address = hop
        if not _trusted(hop, trusted):
            break
    return address


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def ip_key(address: str) -> str:
    """The rate-limit key of an address: IPv6 by its /64 (one host usually holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


# ---------------------------------------------------------------------------- attempt limits


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthLimits:
    login_ip_limit: int = 30
    login_ip_window_s: float = 60.0
    login_failure_limit: int = 10
    login_failure_window_s: float = 900.0
    register_ip_limit: int = 10
    register_ip_window_s: float = 3600.0


class AbuseGuard:
    """Counts login and registration attempts in the rate-limiter port and refuses (429) those over a limit."""

    def __init__(self, limiter: RateLimiter, limits: AuthLimits) -> None:
        self._limiter = limiter
        self._limits = limits

    async def check_login(self, ip: str, account: str) -> None:
        """Count a login attempt from ``ip``; 429 if that IP is over its limit or ``account`` is over its
        failures (that one is only looked at: a failure counts when ``login_failed`` says so)."""
        lim = self._limits
        wait = await self._limiter.wait(f"login-ip:{ip_key(ip)}", lim.login_ip_limit, lim.login_ip_window_s)
        if wait:
            raise retry_later(ErrorCode.RATE_LIMITED, "too many login attempts from this address", wait)
        wait = await self._limiter.wait(
            f"login-fail:{account}", lim.login_failure_limit, lim.login_failure_window_s, take=False
        )
        if wait:
            raise retry_later(ErrorCode.RATE_LIMITED, "too many failed logins for this account", wait)

    async def login_failed(self, account: str) -> None:
        lim = self._limits
        await self._limiter.wait(f"login-fail:{account}", lim.login_failure_limit, lim.login_failure_window_s)

    async def check_register(self, ip: str) -> None:
        lim = self._limits
        wait = await self._limiter.wait(f"register-ip:{ip_key(ip)}", lim.register_ip_limit, lim.register_ip_window_s)
        if wait:
            raise retry_later(ErrorCode.RATE_LIMITED, "too many registrations from this address", wait)


# ---------------------------------------------------------------------------- the hashing pool


def available_memory() -> int | None:
    """Bytes of memory available to new work (Linux MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_hash_concurrency(hash_memory_bytes: int, available: int | None, cpus: int | None) -> int:
    """Hashes that may run at once: a quarter of the available memory over one hash's memory, at most one per
    core (argon2 is CPU-bound), at least 1."""
    by_cpu = max(1, cpus or 1)
    if available is None:
        return by_cpu
    return max(1, min(by_cpu, available // 4 // max(1, hash_memory_bytes)))


class HashPool:
    """Runs password hashing on its own ``concurrency`` threads, with a bounded, time-limited wait for one.

    A slot is given back when the hash finishes, not when its caller stops waiting (a client that disconnects
    mid-login does not free memory a thread is still using)."""

    def __init__(self, concurrency: int, *, wait_s: float) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="flare-hash")
        self._wait_s = wait_s
        self._waiting = 0
        self.running = 0  # hashes in progress (tests, metrics)
        self.completed = 0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._slots.locked() and self._waiting >= MAX_WAITING_PER_SLOT * self.concurrency:
            raise _busy()
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self._wait_s)
        except TimeoutError:
            raise _busy() from None
        finally:
            self._waiting -= 1
        self.running += 1
        job = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        job.add_done_callback(self._release)
        return await asyncio.shield(job)

    def _release(self, _: object) -> None:
        self.running -= 1
        self.completed += 1
        self._slots.release()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _busy() -> RetryLater:
    return retry_later(ErrorCode.UNAVAILABLE, "the server is busy checking passwords: retry shortly", 1)
