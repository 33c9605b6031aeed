"""Automatic pipelining (src/flare_im/backends/redis_pipeline.py) against the real Redis."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis
from tests.services import require

from flare_im.backends.redis_pipeline import AutoPipeline

_INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_concurrent_calls_share_pipelines_and_fail_alone() -> None:
    client = Redis.from_url(require("redis"))
    prefix = f"flare-test:{uuid.uuid4().hex}:"
    pipe = AutoPipeline(client)
    try:
        script = client.register_script(_INCR_BY)
        results = await asyncio.gather(*(pipe.script(script, [f"{prefix}n"], [1]) for _ in range(1000)))
        assert sorted(results) == list(range(1, 1001))  # each call ran once
        assert pipe.pipelines < 20  # ... in a few round trips, not a thousand
        await client.set(f"{prefix}text", "x")
        ok, bad = await asyncio.gather(
            pipe.execute("SET", f"{prefix}a", "1", "NX"),
            pipe.execute("INCR", f"{prefix}text"),  # not a number: this call fails, the other succeeds
            return_exceptions=True,
        )
        assert ok is True
        assert isinstance(bad, Exception)
        # Redis forgot its scripts (as after a restart): they are loaded again.
        await client.script_flush()
        assert await pipe.script(script, [f"{prefix}n"], [5]) == 1005
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
