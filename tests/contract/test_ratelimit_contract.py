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
    # 2 per 2 s: one token a second. ``advance`` lets at least that much time pass (more on a busy machine, on
    # Redis's clock), so each check either gains from extra time or has most of a second to spare.
    limiter: RateLimiter = ratelimit_backend.open()
    assert [await limiter.hit("k", 2, 2.0) for _ in range(3)] == [True, True, False]
    await ratelimit_backend.advance(1.2)
    assert await limiter.hit("k", 2, 2.0)  # one token came back
    assert not await limiter.hit("k", 2, 2.0)  # the next is due a second after it: 0.8 s of margin
    await ratelimit_backend.advance(2.5)  # a whole window: the bucket is full again, and holds no more than ``limit``
    assert [await limiter.hit("k", 2, 2.0) for _ in range(3)] == [True, True, False]


async def test_denied_hits_take_no_token(ratelimit_backend: Any) -> None:
    limiter: RateLimiter = ratelimit_backend.open()
    assert await limiter.hit("k", 1, 1.0)
    for _ in range(20):  # hammering while empty does not push the refill further away
        assert not await limiter.hit("k", 1, 1.0)
    await ratelimit_backend.advance(1.3)
    assert await limiter.hit("k", 1, 1.0)


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


async def test_wait_says_how_long_until_a_hit_passes(ratelimit_backend: Any) -> None:
    limiter: RateLimiter = ratelimit_backend.open()
    assert [await limiter.wait("w", 2, 60) for _ in range(2)] == [0.0, 0.0]
    waited = await limiter.wait("w", 2, 60)
    assert 25 < waited <= 30  # one token comes back every 30 s; a little of that has passed
    assert not await limiter.hit("w", 2, 60)  # the denied wait took no token, and hit shares the bucket


async def test_a_peek_counts_nothing(ratelimit_backend: Any) -> None:
    limiter: RateLimiter = ratelimit_backend.open()
    for _ in range(5):
        assert await limiter.wait("p", 1, 60, take=False) == 0.0
    assert await limiter.wait("p", 1, 60) == 0.0  # the one token was still there
    assert await limiter.wait("p", 1, 60, take=False) > 0  # and now it is gone, for a peek too
    assert not await limiter.hit("p", 1, 60)
