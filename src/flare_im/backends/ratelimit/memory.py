"""In-process rate limiter (embedded mode, and the twin of the Redis one in the contract tests).

GCRA (the generic cell rate algorithm), which is a token bucket kept as one number per key: the time at
which the bucket would be full again (``tat``, theoretical arrival time).
"""

from __future__ import annotations

import time
from collections.abc import Callable

_TOLERANCE = 1 + 1e-9  # ``limit`` steps of ``window_s / limit`` may add up to a hair over ``window_s``


class MemoryRateState:
    """What limiters given the same state share (as nodes share Redis): key -> tat (monotonic seconds)."""

    def __init__(self) -> None:
        self.tat: dict[str, float] = {}
        self.hits_since_sweep = 0

    def clear(self) -> None:
        self.tat.clear()


class MemoryRateLimiter:
    def __init__(self, state: MemoryRateState | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: monotonic seconds (tests pass one they advance by hand)."""
        self._state = MemoryRateState() if state is None else state
        self._clock = clock

    async def hit(self, key: str, limit: int, window_s: float) -> bool:
        return await self.wait(key, limit, window_s) == 0.0

    async def wait(self, key: str, limit: int, window_s: float, *, take: bool = True) -> float:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        now = self._clock()
        state = self._state
        self._sweep(now)
        tat = max(state.tat.get(key, now), now)
        new_tat = tat + window_s / limit
        if new_tat - now > window_s * _TOLERANCE:
            return new_tat - now - window_s
        if take:
            state.tat[key] = new_tat
        return 0.0

    def _sweep(self, now: float) -> None:
        """Drop full buckets, amortised: a full pass once as many hits as there are keys were counted."""
        state = self._state
        state.hits_since_sweep += 1
        if state.hits_since_sweep < len(state.tat):
            return
        state.hits_since_sweep = 0
        state.tat = {k: t for k, t in state.tat.items() if t > now}
