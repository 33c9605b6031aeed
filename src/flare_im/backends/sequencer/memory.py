"""In-process sequencer (embedded): a counter per conversation, seeded from the log on first use.

At most ``max_counters`` counters are kept, least recently used dropped first. A dropped conversation is
seeded again from the durable log on its next seq, exactly as on a cold start, so a counter is dropped only
once the log holds its last seq: then the re-seeded counter continues above it and never hands a seq out
twice. A counter whose last seq is not stored yet (its append is in flight) is kept, and the count can be
above the bound until those appends are stored and the next new conversation drops them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from itertools import islice

from flare_im.backends.sequencer.base import SeedFn

log = logging.getLogger(__name__)

DEFAULT_MAX_COUNTERS = 100_000
_SPARE_CANDIDATES = 8  # counters looked at beyond the excess per pass (some may still have appends in flight)


class MemorySequencer:
    def __init__(
        self,
        seed: SeedFn,
        *,
        max_counters: int = DEFAULT_MAX_COUNTERS,
        counters: OrderedDict[str, int] | None = None,
    ) -> None:
        """``seed``: the durable log's max seq of a conversation; ``max_counters``: conversations whose
        counter is kept (see the module docstring); ``counters``: state shared by sequencers given the same
        one (as nodes share Redis; tests)."""
        if max_counters < 1:
            raise ValueError("max_counters must be at least 1")
        self._seed = seed
        self._max_counters = max_counters
        # conv -> last seq handed out, least recently used first.
        self._counters: OrderedDict[str, int] = OrderedDict() if counters is None else counters
        self._seeding: dict[str, asyncio.Future[int]] = {}
        # conv -> calls waiting for its seed: its counter must not be dropped before they have used it, or
        # a late waiter would count from a seed older than seqs handed out meanwhile.
        self._waiting: dict[str, int] = {}
        self._evicting = False

    async def next_seq(self, conv: str) -> int:
        counters = self._counters
        current = counters.get(conv)
        if current is not None:
            current += 1
            counters[conv] = current
            counters.move_to_end(conv)
            return current
        waiting = self._waiting
        waiting[conv] = waiting.get(conv, 0) + 1
        try:
            seed = await self._seeded(conv)
        finally:
            left = waiting[conv] - 1
            if left:
                waiting[conv] = left
            else:
                del waiting[conv]
        current = counters.get(conv, seed) + 1
        counters[conv] = current
        counters.move_to_end(conv)
        if len(counters) > self._max_counters and not self._evicting:
            await self._evict()
        return current

    async def _seeded(self, conv: str) -> int:
        # Concurrent first sends of one conversation wait for a single seed read.
        pending = self._seeding.get(conv)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._seeding[conv] = pending
            try:
                pending.set_result(await self._seed(conv))
            except Exception as exc:
                pending.set_exception(exc)
                del self._seeding[conv]
                raise
            del self._seeding[conv]
            return pending.result()
        return await asyncio.shield(pending)

    async def _evict(self) -> None:
        """Drop least recently used counters whose last seq the log holds, down to the bound. One call at a
        time; a failed read ends it (the seq already handed out stands, the bound is retried later)."""
        self._evicting = True
        counters = self._counters
        try:
            while (excess := len(counters) - self._max_counters) > 0:
                dropped = 0
                for conv in list(islice(counters, excess + _SPARE_CANDIDATES)):
                    if conv in self._waiting or conv not in counters:
                        continue
                    stored = await self._seed(conv)
                    # Checked after the read: a seq handed out meanwhile is above ``stored`` and keeps it.
                    last = counters.get(conv)
                    if last is not None and last <= stored and conv not in self._waiting:
                        del counters[conv]
                        dropped += 1
                        if len(counters) <= self._max_counters:
                            return
                if not dropped:
                    return  # the oldest ones all have appends in flight: try again on the next new conversation
        except Exception:
            log.exception("dropping sequencer counters failed")
        finally:
            self._evicting = False

    def forget(self, conv: str) -> None:
        self._counters.pop(conv, None)
