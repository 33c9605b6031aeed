"""Redis idempotency store (distributed): one key per ``(sender, cmid)``, claimed with ``SET NX EX``.

The value is ``c`` while claimed, ``r`` + the result once complete; the key expires on its own. The key
``{prefix}idem:vouched`` holds the Redis time (ms) from which fresh claims are trusted; it is set by
``restore`` and goes with everything else when Redis loses its data, so every claim then answers RECLAIMED
until a node restores the store from the durable log.
"""

from __future__ import annotations

from collections.abc import Sequence

from flare_im.backends.redis_client import RedisOwner, RedisSource, key_part
from flare_im.backends.redis_pipeline import AutoPipeline

_CLAIMED = b"c"
_RESULT = b"r"

# KEYS[1]: the key. Deletes it only while it is a bare claim (a stored result is kept).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1]: the key, KEYS[2]: the memory that it was claimed once, KEYS[3]: the vouched-from time.
# ARGV: claim ttl ms, memory ttl ms.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local before = redis.call('EXISTS', KEYS[2])
redis.call('SET', KEYS[1], 'c', 'PX', ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
if before == 1 then return 2 end
local from = redis.call('GET', KEYS[3])
if not from then return 2 end
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) < tonumber(from) then return 2 end
return 1
"""

# KEYS[1]: the vouched-from time, KEYS[2]: the restorer's lock. ARGV: how long from now (ms). Redis's clock,
# so nodes' clocks do not matter. No lock any more means Redis lost its data again during the restore.
_VOUCH = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local now = redis.call('TIME')
local from = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', from))
return from
"""

# KEYS[1]: the vouched-from time. 1 when fresh claims are trusted now.
_IS_VOUCHED = """
local from = redis.call('GET', KEYS[1])
if not from then return 0 end
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) < tonumber(from) then return 0 end
return 1
"""

_RESTORE_BATCH = 5000  # memory keys per pipeline while restoring


class RedisIdempotencyStore:
    def __init__(self, client: RedisSource, prefix: str = "flare:", *, remember_claims_s: float = 600.0) -> None:
        self._owner = RedisOwner(client)
        self._reserve = self._owner.redis.register_script(_RESERVE)
        self._remember_ms = _ms(remember_claims_s)
        self._release = self._owner.redis.register_script(_RELEASE)
        self._vouch = self._owner.redis.register_script(_VOUCH)
        self._is_vouched = self._owner.redis.register_script(_IS_VOUCHED)
        self._pipe = AutoPipeline(self._owner.redis)  # claims and results of concurrent sends share trips
        self._prefix = f"{prefix}idem:"
        self._vouched_key = f"{prefix}idem-vouched"  # outside the key space of (sender, cmid)
        self._restoring_key = f"{prefix}idem-restoring"

    async def aclose(self) -> None:
        await self._owner.aclose()

    def _key(self, sender: str, cmid: str) -> str:
        return f"{self._prefix}{key_part(sender)}{cmid}"

    async def reserve(self, sender: str, cmid: str, ttl_s: float) -> int:
        key = self._key(sender, cmid)
        keys = [key, key + ":once", self._vouched_key]
        got = await self._pipe.script(self._reserve, keys, [_ms(ttl_s), self._remember_ms])
        return int(got)

    async def complete(self, sender: str, cmid: str, result: bytes, ttl_s: float) -> None:
        await self._pipe.execute("SET", self._key(sender, cmid), _RESULT + result, "PX", _ms(ttl_s))

    async def get(self, sender: str, cmid: str) -> bytes | None:
        value = await self._owner.redis.get(self._key(sender, cmid))
        if isinstance(value, bytes) and value.startswith(_RESULT):
            return value[1:]
        return None

    async def release(self, sender: str, cmid: str) -> None:
        await self._release(keys=[self._key(sender, cmid)], args=[_CLAIMED])

    async def vouched(self) -> bool:
        return bool(await self._is_vouched(keys=[self._vouched_key]))

    async def restore(self, keys: Sequence[tuple[str, str]], *, complete: bool, window_s: float) -> bool:
        redis = self._owner.redis
        # A lock that outlives a restorer that died, so another node takes over.
        if not await redis.set(self._restoring_key, b"1", nx=True, px=_ms(max(60.0, window_s))):
            return False
        try:
            for i in range(0, len(keys), _RESTORE_BATCH):
                async with redis.pipeline(transaction=False) as pipe:
                    for sender, cmid in keys[i : i + _RESTORE_BATCH]:
                        pipe.set(self._key(sender, cmid) + ":once", b"1", px=self._remember_ms)
                    await pipe.execute()
            vouched = await self._vouch(
                keys=[self._vouched_key, self._restoring_key], args=[0 if complete else _ms(window_s)]
            )
        finally:
            await redis.delete(self._restoring_key)
        return bool(vouched)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
