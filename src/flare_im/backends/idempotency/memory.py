"""In-process idempotency store (embedded mode, and the twin of the Redis one in the contract tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from flare_im.backends.idempotency.base import CLAIMED, HELD, RECLAIMED

_CLAIMED = None  # the value of a key that is claimed, without a result yet

Entry = tuple[bytes | None, float]  # (result or _CLAIMED, monotonic deadline)


class MemoryIdempotencyState:
    """What stores given the same state share (as nodes share Redis)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}
        self.claimed_once: dict[tuple[str, str], float] = {}  # key -> deadline of the memory of a claim
        self.operations_since_sweep = 0
        self.vouched_from: float | None = None  # monotonic time from which fresh claims are trusted

    def clear(self) -> None:
        self.entries.clear()
        self.claimed_once.clear()
        self.vouched_from = None


class MemoryIdempotencyStore:
    def __init__(
        self,
        state: MemoryIdempotencyState | None = None,
        *,
        remember_claims_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: monotonic seconds for ttls and windows (tests pass one they advance by hand)."""
        self._state = MemoryIdempotencyState() if state is None else state
        self._remember_s = remember_claims_s
        self._clock = clock

    def _live(self, key: tuple[str, str], now: float) -> Entry | None:
        entry = self._state.entries.get(key)
        if entry is not None and entry[1] <= now:
            del self._state.entries[key]
            return None
        return entry

    async def reserve(self, sender: str, cmid: str, ttl_s: float) -> int:
        now = self._clock()
        self._sweep(now)
        key = (sender, cmid)
        if self._live(key, now) is not None:
            return HELD
        before = self._state.claimed_once.get(key, 0.0) > now
        self._state.entries[key] = (_CLAIMED, now + ttl_s)
        self._state.claimed_once[key] = now + self._remember_s
        return RECLAIMED if before or not self._vouched(now) else CLAIMED

    def _vouched(self, now: float) -> bool:
        return self._state.vouched_from is not None and now >= self._state.vouched_from

    async def vouched(self) -> bool:
        return self._vouched(self._clock())

    async def restore(self, keys: Sequence[tuple[str, str]], *, complete: bool, window_s: float) -> bool:
        now = self._clock()
        for key in keys:
            self._state.claimed_once[key] = now + self._remember_s
        self._state.vouched_from = now if complete else now + window_s
        return True

    async def complete(self, sender: str, cmid: str, result: bytes, ttl_s: float) -> None:
        self._state.entries[(sender, cmid)] = (result, self._clock() + ttl_s)

    async def get(self, sender: str, cmid: str) -> bytes | None:
        entry = self._live((sender, cmid), self._clock())
        return None if entry is None else entry[0]

    async def release(self, sender: str, cmid: str) -> None:
        key = (sender, cmid)
        entry = self._state.entries.get(key)
        if entry is not None and entry[0] is _CLAIMED:
            del self._state.entries[key]

    def _sweep(self, now: float) -> None:
        """Drop expired entries, amortised: a full pass once as many claims as there are entries were made."""
        state = self._state
        state.operations_since_sweep += 1
        if state.operations_since_sweep < len(state.entries):
            return
        state.operations_since_sweep = 0
        state.entries = {k: v for k, v in state.entries.items() if v[1] > now}
        state.claimed_once = {k: t for k, t in state.claimed_once.items() if t > now}
