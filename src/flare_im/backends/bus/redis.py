"""Redis node bus (distributed): pub/sub, one channel per node, ``{prefix}node:{node}``.

Publishing: ``publish`` only queues; one writer task sends the queue in order, up to ``max_batch`` PUBLISH
commands per round trip on one connection, so payloads to a node keep their publish order. A batch that
fails (Redis unreachable) is dropped and logged: delivery is at-most-once.

Subscribing: one pub/sub connection per bus, read by one task. When Redis goes away the task logs, waits
(backing off up to ``max_reconnect_delay_s``) and subscribes again on a new connection; payloads published
meanwhile are lost. Redis pub/sub itself drops a subscriber whose output buffer overflows
(``client-output-buffer-limit pubsub``): that is the slow-consumer case, handled the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from flare_im.aio import stop_tasks
from flare_im.backends.bus.base import Handler
from flare_im.backends.redis_client import RedisOwner, RedisSource

log = logging.getLogger(__name__)


class RedisNodeBus:
    def __init__(
        self,
        client: RedisSource,
        prefix: str = "flare:",
        *,
        max_queue: int = 100_000,
        max_batch: int = 512,
        subscribe_timeout_s: float = 5.0,
        close_timeout_s: float = 2.0,
        min_reconnect_delay_s: float = 0.05,
        max_reconnect_delay_s: float = 5.0,
    ) -> None:
        """``max_queue``: payloads waiting to be sent (beyond it ``publish`` drops); ``max_batch``: PUBLISH
        commands per round trip; ``close_timeout_s``: how long ``close`` waits to send what is queued."""
        self._owner = RedisOwner(client)
        self._channel_prefix = f"{prefix}node:"
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._subscribe_timeout_s = subscribe_timeout_s
        self._close_timeout_s = close_timeout_s
        self._min_delay_s = min_reconnect_delay_s
        self._max_delay_s = max_reconnect_delay_s
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queued = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._handlers: dict[bytes, Handler] = {}  # channel -> handler
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped = 0  # payloads dropped by ``publish`` (queue full, or bus closed)
        self.lost = 0  # payloads whose PUBLISH failed

    # ---------------------------------------------------------------- publishing

    def publish(self, node: str, payload: bytes) -> None:
        if self._closed or len(self._queue) >= self._max_queue:
            self.dropped += 1
            return
        self._queue.append((self._channel_prefix + node, payload))
        self._queued.set()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="node-bus-writer")

    async def _write_loop(self) -> None:
        queue = self._queue
        delay = self._min_delay_s
        while True:
            if not queue:
                if self._closed:
                    return
                self._queued.clear()
                await self._queued.wait()
                continue
            pipe = self._owner.redis.pipeline(transaction=False)
            n = min(len(queue), self._max_batch)
            for _ in range(n):
                channel, payload = queue.popleft()
                pipe.publish(channel, payload)
            try:
                await pipe.execute()
            except Exception as exc:  # the writer must outlive any failure: later payloads still go
                self.lost += n
                if isinstance(exc, RedisError | OSError):
                    log.warning("node bus: %d payloads lost, Redis unreachable: %s", n, exc)
                else:
                    log.exception("node bus: %d payloads lost", n)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay_s)
            else:
                delay = self._min_delay_s

    # ---------------------------------------------------------------- subscribing

    async def subscribe(self, node: str, handler: Handler) -> None:
        channel = (self._channel_prefix + node).encode()
        if channel in self._handlers:
            raise ValueError(f"already subscribed to {node!r}")
        if self._closed:
            raise RuntimeError("node bus closed")
        self._handlers[channel] = handler
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel] = confirmed
        try:
            if self._pubsub is None:
                self._pubsub = self._owner.redis.pubsub()
            await self._pubsub.subscribe(channel)
            if self._reader is None:
                self._reader = asyncio.get_running_loop().create_task(self._read_loop(), name="node-bus-reader")
            # Redis confirms once the subscription is active: payloads published after that reach us.
            await asyncio.wait_for(asyncio.shield(confirmed), self._subscribe_timeout_s)
        except BaseException:
            del self._handlers[channel]
            raise
        finally:
            self._confirmations.pop(channel, None)

    async def _read_loop(self) -> None:
        delay = self._min_delay_s
        while True:
            try:
                pubsub = self._pubsub
                if pubsub is None:
                    pubsub = self._pubsub = self._owner.redis.pubsub()
                    if self._handlers:
                        await pubsub.subscribe(*self._handlers)
                    log.info("node bus: subscribed again to %d channels", len(self._handlers))
                message = await pubsub.get_message(timeout=None)
                delay = self._min_delay_s
            except Exception as exc:  # the reader must outlive any failure: it subscribes again
                if isinstance(exc, RedisError | OSError):
                    log.warning("node bus: subscription lost (%s); subscribing again in %.2fs", exc, delay)
                else:
                    log.exception("node bus: subscription failed; subscribing again in %.2fs", delay)
                await self._drop_pubsub()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay_s)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, object]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if not isinstance(channel, bytes):
            return
        if kind == "message":
            handler = self._handlers.get(channel)
            payload = message["data"]
            if handler is not None and isinstance(payload, bytes):
                try:
                    handler(payload)
                except Exception:
                    log.exception("node bus handler of %s failed", channel.decode(errors="replace"))
        elif kind == "subscribe":
            confirmed = self._confirmations.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    # ---------------------------------------------------------------- closing

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._handlers.clear()  # from here on nothing is delivered
        if self._reader is not None:
            await stop_tasks([self._reader])
            self._reader = None
        await self._drop_pubsub()
        if self._writer is not None:
            self._queued.set()  # the writer sends what is queued, then returns
            try:
                await asyncio.wait_for(self._writer, self._close_timeout_s)
            except TimeoutError:
                self.lost += len(self._queue)
                log.warning("node bus: closed with %d payloads unsent", len(self._queue))
            self._writer = None
        await self._owner.aclose()
