"""Contract of the RateLimiter port (src/flare_im/backends/ratelimit/base.py), for every backend.

``ratelimit_backend.open()`` opens a limiter over the backend's shared state (one per node).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flare_im.backends.ratelimit.base import RateLimiter


async def test_a_burst_of_limit_passes_then_hits_are_denied(ratelimit_backend: Any) -> None:
    limiter: RateLimiter = ratelimit_backend.open()
    got = [await limiter.hit("alice:send", 5, 60) for _ in range(8)]
    assert got == [True] * 5 + [False] * 3


async def test_tokens_come_back_at_limit_per_window(ratelimit_backend: Any) -> None:
    limiter: RateLimiter = ratelimit_backend.open()
    assert all([await limiter.hit("k", 4, 0.4) for _ in range(4)])
    assert not await limiter.hit("k", 4, 0.4)
    await asyncio.sleep(0.13)  # one token per 0.1 s
    assert await limiter.hit("k", 4, 0.4)
    assert not await limiter.hit("k", 4, 0.4)
    await asyncio.sleep(0.45)  # a whole window: the bucket is full again, and holds no more than ``limit``
    assert [await limiter.hit("k", 4, 0.4) for _ in range(5)] == [True] * 4 + [False]


async def test_denied_hits_take_no_token(ratelimit_backend: Any) -> None:
    limiter: RateLimiter = ratelimit_backend.open()
    assert await limiter.hit("k", 1, 0.2)
    for _ in range(20):  # hammering while empty does not push the refill further away
        assert not await limiter.hit("k", 1, 0.2)
    await asyncio.sleep(0.25)
    assert await limiter.hit("k", 1, 0.2)


async def test_keys_are_independent(ratelimit_backend: Any) -> None:
    limiter: RateLimiter = ratelimit_backend.open()
    assert await limiter.hit("alice", 1, 60)
    assert not await limiter.hit("alice", 1, 60)
    assert await limiter.hit("bob", 1, 60)
    assert await limiter.hit("alice:typing", 1, 60)


async def test_nodes_share_the_bucket_and_never_overshoot(ratelimit_backend: Any) -> None:
    nodes: list[RateLimiter] = [ratelimit_backend.open() for _ in range(3)]
    got = await asyncio.gather(*(nodes[i % 3].hit("shared", 25, 60) for i in range(100)))
    assert sum(got) == 25


async def test_a_limit_below_one_is_refused(ratelimit_backend: Any) -> None:
    limiter: RateLimiter = ratelimit_backend.open()
    with pytest.raises(ValueError, match="limit"):
        await limiter.hit("k", 0, 1)
