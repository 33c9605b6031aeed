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
