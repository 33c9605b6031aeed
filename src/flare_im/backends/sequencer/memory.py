"""In-process sequencer (embedded): a counter per conversation, seeded from the log on first use."""

from __future__ import annotations

import asyncio

from flare_im.backends.sequencer.base import SeedFn


class MemorySequencer:
    def __init__(self, seed: SeedFn, *, counters: dict[str, int] | None = None) -> None:
        self._seed = seed
        # conv -> last seq handed out; sequencers given one dict share it (as nodes share Redis).
        self._counters: dict[str, int] = {} if counters is None else counters
        self._seeding: dict[str, asyncio.Future[int]] = {}

    async def next_seq(self, conv: str) -> int:
        counters = self._counters
        current = counters.get(conv)
        if current is None:
            current = await self._seeded(conv)
            current = counters.get(conv, current)
        current += 1
        counters[conv] = current
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

    def forget(self, conv: str) -> None:
        self._counters.pop(conv, None)
