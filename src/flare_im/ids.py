"""Identifiers: snowflake message ids and the conversation-list version clock."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# 2025-01-01T00:00:00Z: ids stay positive 63-bit integers for ~69 years after it.
EPOCH_MS = 1_735_689_600_000
NODE_BITS = 10
COUNTER_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
_COUNTER_MASK = (1 << COUNTER_BITS) - 1


class Snowflake:
    """64-bit time-ordered ids: ``ms since EPOCH_MS | node id | counter``.

    Unique per node while the node's clock does not jump back: when it does, or when the 4096 ids of one
    millisecond run out, the generator keeps counting on its last millisecond rather than reuse an id.
    """

    def __init__(self, node_id: int) -> None:
        if not 0 <= node_id <= MAX_NODE:
            raise ValueError(f"node id must be in 0..{MAX_NODE}")
        self._node = node_id << COUNTER_BITS
        self._last_ms = 0
        self._counter = 0
        self.issued = 0  # ids handed out since start: every appended event (admin statistics read its rate)

    def next_id(self) -> int:
        self.issued += 1
        now = int(time.time() * 1000) - EPOCH_MS
        if now > self._last_ms:
            self._last_ms = now
            self._counter = 0
        else:
            self._counter += 1
            if self._counter > _COUNTER_MASK:
                self._last_ms += 1
                self._counter = 0
        return (self._last_ms << (NODE_BITS + COUNTER_BITS)) | self._node | self._counter


def snowflake_floor(epoch_ms: int) -> int:
    """The smallest id any node can generate at or after ``epoch_ms``."""
    return max(0, epoch_ms - EPOCH_MS) << (NODE_BITS + COUNTER_BITS)


def snowflake_ms(message_id: int) -> int:
    """The epoch-ms timestamp embedded in a snowflake id."""
    return (message_id >> (NODE_BITS + COUNTER_BITS)) + EPOCH_MS


class VersionClock:
    """Strictly increasing versions (microseconds of wall time, bumped on ties) for conversation lists.

    Seeded from the largest version already stored, so versions keep increasing across restarts even if
    the wall clock went back. Writes that carry a version go through ``stamped``, which tracks them until
    they finish: ``safe`` is then a version below which every write has finished, the highest position a
    reader may hand out as "seen everything up to here" (writes commit in batches, not in version order).
    """

    def __init__(self, floor: int = 0, *, peers_lag_us: int = 0) -> None:
        """``peers_lag_us``: with several nodes, writes of other nodes are not tracked here; ``safe`` then
        stays this far behind the wall clock, the longest a write of another node is expected to take."""
        self._last = floor
        self._in_flight: set[int] = set()
        self._peers_lag_us = peers_lag_us

    def next(self) -> int:
        """A new version that nothing tracks (writers use ``stamped``)."""
        now = time.time_ns() // 1000
        self._last = now if now > self._last else self._last + 1
        return self._last

    async def stamped(self, write: Callable[[int], Awaitable[T]]) -> T:
        """Run ``write(version)`` with a new version, tracked until it returns or fails."""
        version = self.begin()
        try:
            return await write(version)
        finally:
            self._in_flight.discard(version)

    def begin(self) -> int:
        """A new version, tracked until ``end`` (for hot paths; prefer ``stamped``)."""
        version = self.next()
        self._in_flight.add(version)
        return version

    def end(self, version: int) -> None:
        self._in_flight.discard(version)

    @property
    def safe(self) -> int:
        """Every write stamped with a version <= this one has finished."""
        mine = min(self._in_flight) - 1 if self._in_flight else self._last
        if self._peers_lag_us:
            return min(mine, time.time_ns() // 1000 - self._peers_lag_us)
        return mine

    @property
    def current(self) -> int:
        return self._last


def now_ms() -> int:
    return time.time_ns() // 1_000_000
