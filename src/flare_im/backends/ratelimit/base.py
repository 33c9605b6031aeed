"""The rate limiter port: per-key limits shared by every node (a user's sends, typing notices, logins)."""

from __future__ import annotations

from typing import Protocol


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_s: float) -> bool:
        """Count one hit on ``key``; True if it is allowed. A token bucket of ``limit`` tokens refilled at
        ``limit`` per ``window_s``: a burst of up to ``limit`` hits passes at once, then one per
        ``window_s / limit``. Denied hits take no token. Atomic across nodes: concurrent hits never pass
        more than the bucket holds."""
        ...

    async def wait(self, key: str, limit: int, window_s: float, *, take: bool = True) -> float:
        """``hit`` that says how long to wait: 0.0 if a hit on ``key`` is allowed now, else the seconds until
        one will be (for a ``Retry-After``). With ``take`` an allowed hit is counted, as by ``hit``; without it
        nothing changes (a peek, to ask "would it pass?" before doing costly work). Denied hits take no token."""
        ...
