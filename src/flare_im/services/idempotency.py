"""Idempotency of sends on ``(sender, client message id)`` without a storage read per send.

Two structures:
- an exact map of the most recent keys (bounded) -> the stored message, or the future of a send still in
  progress, so a retry that races the original waits for it and gets the same ack;
- Bloom filters of every key sent in the last one to two windows. A key the filters have never seen was
  certainly not sent within the window, so the send path skips the storage lookup. A filter hit (a real
  retry, or a ~1% false positive) costs one lookup in the log.

After a restart the filters are refilled from the log's recent keys; if the log holds more keys than one
preload takes, misses are not trusted (every send looks in the log) until a full window has passed.
Guarantee: a retry within ``window_s`` of the original returns the original ack. Beyond that, a retry
whose key fell out of the filters may be stored as a new message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

from flare_im.aio import Repeater
from flare_im.backends.idempotency.base import IdempotencyStore
from flare_im.ids import now_ms
from flare_im.protocol.frames import Message

log = logging.getLogger(__name__)

Key = tuple[str, str]
_MASK = (1 << 64) - 1


def _hashes(key: object) -> tuple[int, int]:
    h = hash(key) & _MASK
    return h & 0xFFFFFFFF, (h >> 32) | 1


class BloomFilter:
    """A plain Bloom filter over hashable keys (Python's hash, so only within one process)."""

    def __init__(self, capacity: int, *, hashes: int = 4) -> None:
        # 10 bits per key and 4 hashes: about 1.2% false positives at capacity.
        self.capacity = max(1024, capacity)
        self._bits = self.capacity * 10
        self._array = bytearray(self._bits // 8 + 1)
        self._k = hashes
        self.count = 0

    def add(self, key: object) -> None:
        self.add_hashed(*_hashes(key))

    def __contains__(self, key: object) -> bool:
        return self.has_hashed(*_hashes(key))

    def add_hashed(self, h1: int, h2: int) -> None:
        array, bits = self._array, self._bits
        for i in range(self._k):
            p = (h1 + i * h2) % bits
            array[p >> 3] |= 1 << (p & 7)
        self.count += 1

    def has_hashed(self, h1: int, h2: int) -> bool:
        array, bits = self._array, self._bits
        for i in range(self._k):
            p = (h1 + i * h2) % bits
            if not array[p >> 3] & (1 << (p & 7)):
                return False
        return True

    @property
    def full(self) -> bool:
        return self.count >= self.capacity


class IdempotencyCache:
    def __init__(self, *, window_s: int, max_entries: int, bloom_capacity: int = 1 << 20) -> None:
        self._window_s = window_s
        self._max = max_entries
        self._entries: OrderedDict[Key, Message | asyncio.Future[Message]] = OrderedDict()
        self._bloom_capacity = bloom_capacity
        # Filters of the current epoch (newest last; a full one is followed by a twice larger one) and
        # of the previous epoch: together they hold every key of at least the last window.
        self._current: list[BloomFilter] = [BloomFilter(bloom_capacity)]
        self._previous: list[BloomFilter] = []
        self._epoch_started = time.monotonic()
        self._trusted_from = self._epoch_started + window_s  # misses are trusted once this is past

    # ------------------------------------------------------------------ exact recent entries

    def get(self, key: Key) -> Message | asyncio.Future[Message] | None:
        return self._entries.get(key)

    def put(self, key: Key, value: Message | asyncio.Future[Message]) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        while len(entries) > self._max:
            entries.popitem(last=False)

    def discard(self, key: Key) -> None:
        """Forget a send that failed (it may be retried and stored later). Filters keep the key: that
        only costs the retry a lookup."""
        self._entries.pop(key, None)

    # ------------------------------------------------------------------ filters

    def maybe_stored(self, key: Key) -> bool:
        """False when ``key`` was certainly not stored within the window (no lookup needed)."""
        if self._window_s <= 0:
            return False
        self._rotate()
        return self._maybe(*_hashes(key))

    def claim(self, key: Key) -> bool:
        """``maybe_stored(key)``, then remember ``key`` as sent (hashing it once)."""
        if self._window_s <= 0:
            return False
        self._rotate()
        h1, h2 = _hashes(key)
        stored = self._maybe(h1, h2)
        self._add(h1, h2)
        return stored

    def _maybe(self, h1: int, h2: int) -> bool:
        if time.monotonic() < self._trusted_from:  # not yet known to hold every key of the window
            return True
        return any(f.has_hashed(h1, h2) for f in self._current) or any(f.has_hashed(h1, h2) for f in self._previous)

    def preload(self, keys: Iterable[Key], *, complete: bool) -> None:
        """Fill the filters with keys the log stored during the last window (after a restart).
        ``complete``: these are all of them, so misses can be trusted at once."""
        for key in keys:
            self._remember(key)
        if complete:
            self._trusted_from = time.monotonic()

    def _remember(self, key: Key) -> None:
        if self._window_s <= 0:
            return
        self._rotate()
        self._add(*_hashes(key))

    def _add(self, h1: int, h2: int) -> None:
        current = self._current[-1]
        if current.full:
            current = BloomFilter(current.capacity * 2)
            self._current.append(current)
        current.add_hashed(h1, h2)

    def _rotate(self) -> None:
        now = time.monotonic()
        if now - self._epoch_started >= self._window_s:
            size = self._current[-1].capacity
            self._previous = self._current
            self._current = [BloomFilter(max(self._bloom_capacity, size))]
            self._epoch_started = now


class SharedIdempotencyKeeper:
    """Keeps the shared idempotency store of a cluster vouched for: when it lost its data (a Redis that
    restarted empty, or a new deployment), one node restores it from the durable log's recent sends.
    Until then every claim answers RECLAIMED and sends look in the log: slower, never wrong."""

    def __init__(
        self,
        store: IdempotencyStore,
        recent: Callable[[int, int], Awaitable[list[Key]]],
        *,
        window_s: float,
        check_s: float = 2.0,
        limit: int = 2_000_000,
    ) -> None:
        self._store = store
        self._recent = recent  # (since epoch ms, limit) -> keys the log holds from then on
        self._window_s = window_s
        self._limit = limit
        # While a restore fails (the log or the store unreachable), sends keep looking in the log.
        self._checker = Repeater(self.check, check_s, what="restoring the idempotency store", at_once=True)

    async def check(self) -> bool:
        """Restore the store if it does not vouch; True when it vouches (or this node just restored it)."""
        if await self._store.vouched():
            return True
        keys = await self._recent(now_ms() - int(self._window_s * 1000), self._limit)
        done = await self._store.restore(keys, complete=len(keys) < self._limit, window_s=self._window_s)
        if done:
            log.warning("idempotency store restored from the message log (%d recent sends)", len(keys))
        return done

    def start(self) -> None:
        self._checker.start()

    async def close(self) -> None:
        await self._checker.close()
