"""What the Redis adapters share: a client given as a client or a URL, and keys under one prefix.

Every Redis adapter takes ``client`` (a ``redis.asyncio.Redis`` with ``decode_responses=False``, the default,
or a ``redis://`` URL) and ``prefix``; all its keys and channels start with the prefix, so several
deployments (or test runs) can share one Redis database. An adapter built from a URL owns its client (made by
``redis_from_url``) and closes it in ``aclose``; a client passed in is left to its owner, who should build
it the same way.

The multi-key Lua scripts touch keys they compute from the prefix, so all keys of one prefix must live on
one Redis server: a standalone Redis, or a Redis Cluster with a hash tag in the prefix (``"{flare}:"``).
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

RedisSource = Redis | str


def redis_from_url(url: str, *, max_connections: int = 64, pool_timeout_s: float = 10.0, retries: int = 3) -> Redis:
    """A client for the adapters: callers wait for a free connection (up to ``pool_timeout_s``) when all
    ``max_connections`` are busy, where redis-py's default pool raises; a command that meets a broken
    connection (Redis restarted) is retried ``retries`` times on a new one, where ``from_url`` clients do
    not retry at all. A retried command may have run once already: the adapters allow for it."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.01), retries),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis.from_pool(pool)


class RedisOwner:
    """Holds the client of one adapter; closes it on ``aclose`` only when it was built from a URL."""

    def __init__(self, source: RedisSource) -> None:
        if isinstance(source, str):
            self.redis: Redis = redis_from_url(source)
            self._owned = True
        else:
            self.redis = source
            self._owned = False

    async def aclose(self) -> None:
        if self._owned:
            await self.redis.aclose()


def key_part(value: str) -> str:
    """``value`` as one unambiguous part of a key made of several caller-given strings ("a:b" + "c" and
    "a" + "b:c" must not meet): its length, then itself."""
    return f"{len(value)}.{value}"
