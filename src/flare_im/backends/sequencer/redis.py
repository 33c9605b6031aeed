"""Redis sequencer (distributed): one counter per conversation, shared by every node.

Redis is a cache, not the source of truth. The counter of ``conv`` is the hash ``{prefix}seq:{conv}`` =
{``n``: the last seq handed out, ``e``: an epoch}; a Lua script increments ``n`` only when the hash exists.
When it does not (first use, Redis restarted empty or was flushed, the key was evicted) the sequencer reads
the durable log's max seq (``seed``) and, in one script, creates the counter from it (unless another node
just did) and allocates: a seq is never handed out below what the log holds. The epoch is new each time the
counter is created, so a node can tell "my counter" from "a counter re-created after a flush".

Options and what they cost:

- ``batch=1`` (default): one round trip per seq; seqs of a conversation are handed out in Redis order, with
  no gap except where an append failed after a later seq was already taken.
- ``batch>1``: a node takes ``batch`` seqs per round trip (HINCRBY) and hands them out locally. Seqs of one
  conversation from different nodes then interleave out of time order (node A hands out 1..100 while node
  B hands out 101..200), a node that stops with part of a batch unused leaves those seqs as a permanent gap,
  and, because a node does not ask Redis while it holds a batch, a counter re-created after a flush can
  hand out seqs that another node still holds: use it only with a Redis that keeps its keys
  (``maxmemory-policy noeviction``, no restart while nodes run).

What this does not guarantee: an append still in flight when Redis loses the counter is not in the log yet,
so the re-seeded counter can hand its seq out again; the window is one append's latency at the moment of the
loss. The same holds for ``forget`` after an append whose outcome is unknown (a timeout): the failed seq is
taken back unless the log already shows it. (A call retried after a broken connection may have taken a seq
already: that seq is a gap, never a reuse.)
"""

from __future__ import annotations

import asyncio
import os
from contextvars import ContextVar
from dataclasses import dataclass

from flare_im.backends.redis_client import RedisOwner, RedisSource
from flare_im.backends.redis_pipeline import AutoPipeline
from flare_im.backends.sequencer.base import SeedFn

# KEYS[1]: the counter; ARGV[1]: how many seqs to take. Returns {last seq taken, epoch}, or nil when the
# counter does not exist (then the caller seeds it from the durable log).
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return {redis.call('HINCRBY', KEYS[1], 'n', ARGV[1]), redis.call('HGET', KEYS[1], 'e')}
"""

# KEYS[1]: the counter. ARGV: durable max seq, how many to take, epoch for a new counter, then the give-back
# of a failed append: the epoch and top the counter must still have, and the value to set it back to
# (empty epoch: nothing to give back). Creates the counter from the durable max if it is missing, gives
# back if nobody took a seq since, catches up with the log if the counter is behind it, then takes.
_SEED_AND_TAKE = """
local seed = tonumber(ARGV[1])
local raw = redis.call('HGET', KEYS[1], 'n')
if not raw then
  redis.call('HSET', KEYS[1], 'n', ARGV[1], 'e', ARGV[3])
else
  local cur = tonumber(raw)
  local target = cur
  if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'e') == ARGV[4] and cur == tonumber(ARGV[5]) then
    target = math.max(tonumber(ARGV[6]), seed)
  elseif seed > cur then
    target = seed
  end
  if target ~= cur then redis.call('HSET', KEYS[1], 'n', string.format('%d', target)) end
end
return {redis.call('HINCRBY', KEYS[1], 'n', ARGV[2]), redis.call('HGET', KEYS[1], 'e')}
"""

_MISS_RETRIES = 3  # nil replies retried before seeding when another caller seeded meanwhile


@dataclass(slots=True)
class _Batch:
    next: int  # the next seq to hand out
    top: int  # the last seq of the batch
    epoch: bytes


@dataclass(frozen=True, slots=True)
class _GiveBack:
    """Set the counter back to ``to`` if it still has ``epoch`` and ``top`` (nobody took a seq since)."""

    epoch: bytes
    top: int
    to: int


# (sequencer, conv, seq, epoch) of the last seq this task was handed: ``forget`` is called by the task whose
# append failed, so this names the failed seq without changing the port.
_last_taken: ContextVar[tuple[RedisSequencer, str, int, bytes] | None] = ContextVar("flare_last_seq", default=None)


class RedisSequencer:
    def __init__(
        self,
        client: RedisSource,
        seed: SeedFn,
        prefix: str = "flare:",
        *,
        batch: int = 1,
        max_batches: int = 100_000,
    ) -> None:
        """``batch``: seqs taken per round trip (see the module docstring for the trade-off);
        ``max_batches``: conversations whose batch is kept (the oldest one beyond it is dropped, a gap)."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self._owner = RedisOwner(client)
        redis = self._owner.redis
        self._take = redis.register_script(_TAKE)
        self._pipe = AutoPipeline(redis)  # concurrent sends' INCRs share round trips
        self._seed_and_take = redis.register_script(_SEED_AND_TAKE)
        self._seed = seed
        self._prefix = f"{prefix}seq:"
        self._batch = batch
        self._max_batches = max_batches
        self._batches: dict[str, _Batch] = {}
        self._refilling: dict[str, asyncio.Future[None]] = {}
        self._seeding: dict[str, asyncio.Future[int]] = {}
        self._seeds_done = 0  # seeds completed by this instance: a nil reply that raced one is retried
        self._forgotten: dict[str, _GiveBack | None] = {}

    async def aclose(self) -> None:
        await self._owner.aclose()

    async def next_seq(self, conv: str) -> int:
        _last_taken.set(None)  # a failing call must not leave an older seq for ``forget`` to give back
        if self._batch == 1:
            seq, epoch = await self._allocate(conv, 1)
        else:
            seq, epoch = await self._from_batch(conv)
        _last_taken.set((self, conv, seq, epoch))
        return seq

    def forget(self, conv: str) -> None:
        last = _last_taken.get()
        _last_taken.set(None)
        failed = last[2] if last is not None and last[0] is self and last[1] == conv else None
        batch = self._batches.pop(conv, None)
        give_back: _GiveBack | None = None
        if batch is not None:  # the unused rest of the batch, and the failed seq when it was the last one out
            to = failed - 1 if failed == batch.next - 1 else batch.next - 1
            give_back = _GiveBack(batch.epoch, batch.top, to)
        elif last is not None and failed is not None:
            give_back = _GiveBack(last[3], failed, failed - 1)
        self._forgotten[conv] = give_back

    async def _from_batch(self, conv: str) -> tuple[int, bytes]:
        while True:
            batch = self._batches.get(conv)
            if batch is not None and batch.next <= batch.top:
                seq = batch.next
                batch.next += 1
                return seq, batch.epoch
            refill = self._refilling.get(conv)
            if refill is not None:  # one refill per conversation at a time; the others wait for it
                await asyncio.shield(refill)
                continue
            refill = asyncio.get_running_loop().create_future()
            self._refilling[conv] = refill
            try:
                top, epoch = await self._allocate(conv, self._batch)
            except BaseException as exc:
                refill.set_exception(exc)
                refill.exception()  # waiters may all be gone: mark it retrieved
                raise
            finally:
                del self._refilling[conv]
            refill.set_result(None)
            self._batches.pop(conv, None)
            if len(self._batches) >= self._max_batches:
                del self._batches[next(iter(self._batches))]
            self._batches[conv] = _Batch(top - self._batch + 1, top, epoch)

    async def _allocate(self, conv: str, n: int) -> tuple[int, bytes]:
        """Take ``n`` seqs of ``conv`` from Redis; returns the last one and the counter's epoch."""
        key = self._prefix + conv
        give_back = self._forgotten.pop(conv, _NOTHING)
        if give_back is _NOTHING:
            give_back = None
            for _ in range(_MISS_RETRIES):
                seeds_done = self._seeds_done
                got = await self._pipe.script(self._take, [key], [n])
                if got is not None:
                    return int(got[0]), got[1]
                # A miss that raced a seed of this instance finding the counter again is retried rather
                # than read from the log once more.
                if conv in self._seeding or seeds_done == self._seeds_done:
                    break
        return await self._seed_then_take(conv, key, n, give_back)

    async def _seed_then_take(self, conv: str, key: str, n: int, give_back: _GiveBack | None) -> tuple[int, bytes]:
        # Concurrent misses of one conversation share a single read of the durable log.
        pending = self._seeding.get(conv)
        if pending is not None:
            return await self._run_seed_and_take(key, await asyncio.shield(pending), n, give_back)
        pending = asyncio.get_running_loop().create_future()
        self._seeding[conv] = pending
        try:
            try:
                seed = await self._seed(conv)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # no other caller may be waiting: mark it retrieved
                raise
            pending.set_result(seed)
            return await self._run_seed_and_take(key, seed, n, give_back)
        finally:
            del self._seeding[conv]
            self._seeds_done += 1

    async def _run_seed_and_take(self, key: str, seed: int, n: int, give_back: _GiveBack | None) -> tuple[int, bytes]:
        args: list[str | int] = [seed, n, os.urandom(8).hex()]
        if give_back is not None:
            args += [give_back.epoch.decode(), give_back.top, give_back.to]
        else:
            args += ["", 0, 0]
        got = await self._seed_and_take(keys=[key], args=args)
        return int(got[0]), got[1]


_NOTHING = _GiveBack(b"", 0, 0)  # sentinel: no ``forget`` pending for the conversation
