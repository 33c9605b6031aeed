"""Redis rate limiter (distributed): GCRA in one Lua script per hit, one key per limited key.

``{prefix}rate:{key}`` holds the bucket's theoretical arrival time in microseconds of the Redis server's
clock (so nodes with skewed clocks agree) and expires when the bucket is full again.
"""

from __future__ import annotations

from flare_im.backends.redis_client import RedisOwner, RedisSource
from flare_im.backends.redis_pipeline import AutoPipeline

# KEYS[1]: the bucket; ARGV: limit, window in microseconds. Returns 1 when the hit is allowed.
_HIT = """
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + window / tonumber(ARGV[1])
if new_tat - now > window then return 0 end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return 1
"""

# The same with a wait: ARGV[3] = 1 to count an allowed hit (0: peek). Returns 0 when allowed, else the
# microseconds until a hit will be.
_WAIT = """
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + window / tonumber(ARGV[1])
if new_tat - now > window then return math.max(1, math.ceil(new_tat - now - window)) end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
end
return 0
"""


class RedisRateLimiter:
    def __init__(self, client: RedisSource, prefix: str = "flare:") -> None:
        self._owner = RedisOwner(client)
        self._hit = self._owner.redis.register_script(_HIT)
        self._wait = self._owner.redis.register_script(_WAIT)
        self._pipe = AutoPipeline(self._owner.redis)  # concurrent hits share round trips
        self._prefix = f"{prefix}rate:"

    async def aclose(self) -> None:
        await self._owner.aclose()

    async def hit(self, key: str, limit: int, window_s: float) -> bool:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        allowed = await self._pipe.script(self._hit, [self._prefix + key], [limit, round(window_s * 1_000_000)])
        return bool(allowed)

    async def wait(self, key: str, limit: int, window_s: float, *, take: bool = True) -> float:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        args = [limit, round(window_s * 1_000_000), 1 if take else 0]
        wait_us = await self._pipe.script(self._wait, [self._prefix + key], args)
        return int(wait_us) / 1_000_000
