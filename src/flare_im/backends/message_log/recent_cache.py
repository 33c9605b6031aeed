"""L0: the newest events of each conversation in Redis (distributed mode, DESIGN.md §3 step 4).

A send is acked once its event is in the durable queue *and* here, so sync can read it before the store
worker has written it to ClickHouse. Per conversation one hash holds the newest ``keep`` events by seq
(current state: an operation rewrites its target's entry) and the head (max seq, list version); a second
hash holds targets older than that which an operation changed recently ("patches"), until the worker has
surely applied them. Redis is a cache: whatever is missing here is read from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

import msgspec

from flare_im.backends.message_log.base import SeqTaken
from flare_im.backends.redis_client import RedisOwner, RedisSource, key_part
from flare_im.protocol.frames import Message

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Message).decode

# KEYS[1]: events hash. ARGV: seq, blob, list version, keep, ttl ms.
# Field "h" is "max_seq:version"; an older seq than max_seq - keep is not kept.
_PUT = """
local seq = tonumber(ARGV[1])
local head = redis.call('HGET', KEYS[1], 'h')
local max_seq, version = 0, 0
if head then
  local sep = string.find(head, ':')
  max_seq = tonumber(string.sub(head, 1, sep - 1))
  version = tonumber(string.sub(head, sep + 1))
end
local keep = tonumber(ARGV[4])
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and held ~= ARGV[2] then
  return -1
end
if seq > max_seq - keep then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
if seq > max_seq then
  for old = math.max(max_seq - keep + 1, seq - 2 * keep, 1), seq - keep do
    redis.call('HDEL', KEYS[1], tostring(old))
  end
  max_seq = seq
end
version = math.max(version, tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'h', string.format('%d:%d', max_seq, version))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return max_seq
"""

# KEYS[1]: events hash, KEYS[2]: patches hash. ARGV: seq, blob, patch ttl ms.
# Rewrites a target in place when the events hash holds it, else keeps it as a patch.
_UPDATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
"""

# KEYS[1]: version key. ARGV: the version the caller read from storage, the new version, ttl ms.
# Compare-and-set across nodes: succeeds when the current version (the key, or the caller's read when
# the key is absent) is new - 1. Returns the current version.
_CAS = """
local current = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if current + 1 == tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return -1
end
return current
"""


_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RecentCache:
    def __init__(
        self,
        client: RedisSource,
        prefix: str = "flare:",
        *,
        keep: int = 200,
        ttl_s: float = 7 * 86400,
        patch_ttl_s: float = 3600,
    ) -> None:
        self._owner = RedisOwner(client)
        redis = self._owner.redis
        self._put = redis.register_script(_PUT)
        self._update = redis.register_script(_UPDATE)
        self._cas = redis.register_script(_CAS)
        self._unlock = redis.register_script(_UNLOCK)
        self._prefix = prefix
        self.keep = keep
        self._ttl_ms = int(ttl_s * 1000)
        self._patch_ttl_ms = int(patch_ttl_s * 1000)
        self._queue: list[tuple[Any, list[str], list[Any], Message, asyncio.Future[None]]] = []
        self._flusher: asyncio.Future[None] | None = None

    async def aclose(self) -> None:
        await self._owner.aclose()

    @contextlib.asynccontextmanager
    async def lock(self, name: str, *, hold_s: float = 10.0, wait_s: float = 10.0) -> AsyncIterator[None]:
        """A lock shared by every node (SET NX with expiry, released only by its holder)."""
        key, token = f"{self._prefix}lock:{key_part(name)}", uuid.uuid4().hex
        redis = self._owner.redis
        deadline = time.monotonic() + wait_s
        while not await redis.set(key, token, nx=True, px=int(hold_s * 1000)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"lock {name} is held")
            await asyncio.sleep(0.005)
        try:
            yield
        finally:
            await self._unlock(keys=[key], args=[token])

    def _events(self, conv: str) -> str:
        return f"{self._prefix}l0:{key_part(conv)}"

    def _patches(self, conv: str) -> str:
        return f"{self._prefix}l0p:{key_part(conv)}"

    def put(self, message: Message, version: int) -> Awaitable[None]:
        """Add a new event (the conversation's head moves to it). Raises SeqTaken when L0 holds another
        event at its seq (putting the same event again changes nothing). Writes are applied in call order."""
        args = [message.seq, _encode(message), version, self.keep, self._ttl_ms]
        return self._ordered(self._put, [self._events(message.conv)], args, message)

    def update(self, target: Message) -> Awaitable[None]:
        """Store the new state of an earlier event (an operation changed it), in call order with ``put``."""
        args = [target.seq, _encode(target), self._patch_ttl_ms]
        return self._ordered(self._update, [self._events(target.conv), self._patches(target.conv)], args, target)

    def _ordered(self, script: Any, keys: list[str], args: list[Any], message: Message) -> Awaitable[None]:
        # One pipeline per flush on one connection: Redis runs the scripts in the order they were called,
        # which several pooled connections would not guarantee.
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, message, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        return fut

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            pipe = self._owner.redis.pipeline(transaction=False)
            try:
                for script, keys, args, _, _ in batch:
                    await script(keys=keys, args=args, client=pipe)  # queues EVALSHA on the pipeline
                results = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (script, _, _, message, fut), result in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                elif script is self._put and int(result) == -1:
                    fut.set_exception(SeqTaken(f"{message.conv}#{message.seq} holds another event"))
                else:
                    fut.set_result(None)

    async def claim_version(self, conv: str, seq: int, read_version: int, new_version: int) -> int | None:
        """Move message ``seq`` from ``new_version - 1`` to ``new_version`` for every node at once; None on
        success, else the version it is at (another node changed it first)."""
        key = f"{self._prefix}ver:{key_part(conv)}{seq}"
        current = await self._cas(keys=[key], args=[read_version, new_version, self._ttl_ms])
        return None if int(current) == -1 else int(current)

    async def head(self, conv: str) -> tuple[int, int] | None:
        """``(max_seq, list version)`` of ``conv`` as L0 knows it; None when L0 has nothing of it."""
        raw: bytes | None = await self._owner.redis.hget(self._events(conv), "h")  # type: ignore[assignment]
        return _head(raw)

    async def heads(self, convs: Sequence[str]) -> dict[str, tuple[int, int, Message | None]]:
        """For each conversation L0 knows: ``(max_seq, version, last event if held)``; one round trip."""
        if not convs:
            return {}
        pipe = self._owner.redis.pipeline(transaction=False)
        for conv in convs:
            pipe.hget(self._events(conv), "h")
        raw_heads = await pipe.execute()
        known = [(conv, h) for conv, raw in zip(convs, raw_heads, strict=True) if (h := _head(raw)) is not None]
        pipe = self._owner.redis.pipeline(transaction=False)
        for conv, (max_seq, _) in known:
            pipe.hget(self._events(conv), str(max_seq))
        lasts = await pipe.execute() if known else []
        return {
            conv: (max_seq, version, _decode(last) if last else None)
            for (conv, (max_seq, version)), last in zip(known, lasts, strict=True)
        }

    async def get(self, conv: str, seqs: Sequence[int]) -> dict[int, Message]:
        """The events among ``seqs`` that L0 holds (patched targets included), in their newest state."""
        if not seqs:
            return {}
        fields = [str(s) for s in seqs]
        pipe = self._owner.redis.pipeline(transaction=False)
        pipe.hmget(self._events(conv), fields)
        pipe.hmget(self._patches(conv), fields)
        events, patches = await pipe.execute()
        out: dict[int, Message] = {}
        for seq, event, patch in zip(seqs, events, patches, strict=True):
            blob = event or patch
            if blob:
                out[seq] = _decode(blob)
        return out

    async def patches(self, conv: str) -> dict[int, Message]:
        """Older targets changed recently (their new state may not be in the store yet)."""
        raw: dict[bytes, bytes] = await self._owner.redis.hgetall(self._patches(conv))  # type: ignore[assignment]
        return {int(k): _decode(v) for k, v in raw.items()}


def _head(raw: bytes | None) -> tuple[int, int] | None:
    if not raw:
        return None
    max_seq, version = raw.split(b":")
    return int(max_seq), int(version)
