"""Micro-benchmark of RedisSequencer.next_seq: concurrent callers over many conversations.

Run: .venv/bin/python bench/redis_sequencer.py [seconds per case] [callers] [conversations]
(defaults 3, 100, 1000). Uses FLARE_BENCH_REDIS_URL (default redis://127.0.0.1:6379/15) under a random key
prefix, deletes its keys afterwards, and stops after the given time per case (batch=1, then batch=100).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import uvloop

from flare_im.backends.redis_client import redis_from_url
from flare_im.backends.sequencer.redis import RedisSequencer


async def _no_history(conv: str) -> int:
    return 0  # every conversation starts empty


async def run_case(url: str, batch: int, seconds: float, callers: int, convs: int) -> float:
    prefix = f"flare-bench:{uuid.uuid4().hex}:"
    client = redis_from_url(url, max_connections=callers)
    sequencer = RedisSequencer(client, _no_history, prefix, batch=batch)
    names = [f"g:bench-{i}" for i in range(convs)]
    calls = 0
    deadline = time.perf_counter() + seconds

    async def caller(k: int) -> None:
        nonlocal calls
        i = k
        while time.perf_counter() < deadline:
            await sequencer.next_seq(names[i % convs])
            i += callers
            calls += 1

    try:
        for name in names:  # seed every counter first: the run measures steady-state allocation
            await sequencer.next_seq(name)
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()
        await asyncio.gather(*(caller(k) for k in range(callers)))
        elapsed = time.perf_counter() - start
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.unlink(*keys[i : i + 1000])
        await client.aclose()
    rate = calls / elapsed
    print(f"batch={batch:<4} {callers} callers, {convs} conversations: {calls} calls in {elapsed:.2f}s = {rate:,.0f}/s")
    return rate


async def main(seconds: float, callers: int, convs: int) -> None:
    url = os.environ.get("FLARE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    for batch in (1, 100):
        await run_case(url, batch, seconds, callers, convs)


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    seconds, callers, convs = args + [3.0, 100, 1000][len(args) :]
    uvloop.run(main(seconds, int(callers), int(convs)))
