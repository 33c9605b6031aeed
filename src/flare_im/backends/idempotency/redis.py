"""Redis idempotency store (distributed): one key per ``(sender, cmid)``, claimed with ``SET NX EX``.

The value is ``c`` while claimed, ``r`` + the result once complete; the key expires on its own.
"""

from __future__ import annotations

from flare_im.backends.redis_client import RedisOwner, RedisSource, key_part
from flare_im.backends.redis_pipeline import AutoPipeline

_CLAIMED = b"c"
_RESULT = b"r"

# KEYS[1]: the key. Deletes it only while it is a bare claim (a stored result is kept).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1]: the key, KEYS[2]: the memory that it was claimed once. ARGV: claim ttl ms, memory ttl ms.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local before = redis.call('EXISTS', KEYS[2])
redis.call('SET', KEYS[1], 'c', 'PX', ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
if before == 1 then return 2 end
return 1
"""


class RedisIdempotencyStore:
    def __init__(self, client: RedisSource, prefix: str = "flare:", *, remember_claims_s: float = 600.0) -> None:
        self._owner = RedisOwner(client)
        self._reserve = self._owner.redis.register_script(_RESERVE)
        self._remember_ms = _ms(remember_claims_s)
        self._release = self._owner.redis.register_script(_RELEASE)
        self._pipe = AutoPipeline(self._owner.redis)  # claims and results of concurrent sends share trips
        self._prefix = f"{prefix}idem:"

    async def aclose(self) -> None:
        await self._owner.aclose()

    def _key(self, sender: str, cmid: str) -> str:
        return f"{self._prefix}{key_part(sender)}{cmid}"

    async def reserve(self, sender: str, cmid: str, ttl_s: float) -> int:
        key = self._key(sender, cmid)
        got = await self._pipe.script(self._reserve, [key, key + ":once"], [_ms(ttl_s), self._remember_ms])
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


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
