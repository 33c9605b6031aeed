"""Automatic pipelining for the hot Redis calls of the send path (sequencer, idempotency keys).

Every send makes a few small Redis calls. Issued one by one through redis-py, each costs a pool checkout,
a write and a parse: the client's CPU, not Redis, limits a node. Calls made while a pipeline is being
sent are queued and go together as the next pipeline (one connection, one write, one read); with up to
``max_in_flight`` pipelines at once. A pipeline is not a transaction: each call succeeds or fails alone.
Call order is kept within one pipeline, not across pipelines in flight; callers that need an order
across calls await each call first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from flare_im.observability.stats import SIZE_BUCKETS, Histogram

_Call = tuple[tuple[Any, ...], "asyncio.Future[Any]", AsyncScript | None]


class AutoPipeline:
    def __init__(self, redis: Redis, *, max_batch: int = 512, max_in_flight: int = 4) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._slots = asyncio.Semaphore(max_in_flight)
        self._queue: list[_Call] = []
        self._scheduled = False
        self._loaded: set[str] = set()
        self.pipelines = 0  # sent so far (observable in tests)
        self.sizes = Histogram(SIZE_BUCKETS)  # calls per pipeline sent (read by /metrics)

    def execute(self, *args: Any) -> Awaitable[Any]:
        """Queue one command (``"SET", key, value, "NX"``); resolves with its reply or raises its error."""
        return self._add(args, None)

    def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Awaitable[Any]:
        """Queue a registered script call (EVALSHA; loaded on first use and again after a Redis restart)."""
        assert script.sha
        return self._add(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    def _add(self, args: tuple[Any, ...], script: AsyncScript | None) -> Awaitable[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, fut, script))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)
        return fut

    def _start(self) -> None:
        self._scheduled = False
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            task = asyncio.ensure_future(self._send(batch))
            task.add_done_callback(_retrieved)

    async def _send(self, batch: list[_Call]) -> None:
        async with self._slots:
            try:
                await self._load([s for _, _, s in batch if s is not None])
                pipe = self._redis.pipeline(transaction=False)
                for args, _, _ in batch:
                    pipe.execute_command(*args)
                try:
                    replies = await pipe.execute(raise_on_error=False)
                except asyncio.CancelledError:  # at shutdown: give the connection back to the pool
                    await pipe.reset()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    raise
                self.pipelines += 1
                self.sizes.observe(len(batch))
            except Exception as exc:
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                return
        retry: list[_Call] = []
        for call, reply in zip(batch, replies, strict=True):
            fut = call[1]
            if fut.done():
                continue
            if isinstance(reply, NoScriptError) and call[2] is not None:
                retry.append(call)  # Redis restarted and forgot the script
            elif isinstance(reply, Exception):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)
        if retry:
            self._loaded.clear()
            await self._send(retry)

    async def _load(self, scripts: list[AsyncScript]) -> None:
        for script in scripts:
            if script.sha not in self._loaded:
                await self._redis.script_load(script.script)
                self._loaded.add(script.sha)


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
