"""In-process node bus (embedded mode, and the twin of the Redis one in the contract tests)."""

from __future__ import annotations

import asyncio
import logging

from flare_im.backends.bus.base import Handler

log = logging.getLogger(__name__)


class _Subscription:
    __slots__ = ("active", "handler", "node")

    def __init__(self, node: str, handler: Handler) -> None:
        self.node = node
        self.handler = handler
        self.active = True

    def deliver(self, payload: bytes) -> None:
        if not self.active:
            return
        try:
            self.handler(payload)
        except Exception:
            log.exception("node bus handler of %s failed", self.node)


class MemoryBroker:
    """What buses given the same broker share (as nodes share Redis): node -> its subscriptions."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, list[_Subscription]] = {}


class MemoryNodeBus:
    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self._broker = MemoryBroker() if broker is None else broker
        self._mine: dict[str, _Subscription] = {}
        self._closed = False

    def publish(self, node: str, payload: bytes) -> None:
        if self._closed:
            return
        subscriptions = self._broker.subscriptions.get(node)
        if subscriptions:
            loop = asyncio.get_running_loop()
            for subscription in subscriptions:
                loop.call_soon(subscription.deliver, payload)  # FIFO: publish order is kept

    async def subscribe(self, node: str, handler: Handler) -> None:
        if node in self._mine:
            raise ValueError(f"already subscribed to {node!r}")
        if self._closed:
            raise RuntimeError("node bus closed")
        subscription = _Subscription(node, handler)
        self._mine[node] = subscription
        self._broker.subscriptions.setdefault(node, []).append(subscription)

    async def close(self) -> None:
        self._closed = True
        for node, subscription in self._mine.items():
            subscription.active = False
            subscriptions = self._broker.subscriptions[node]
            subscriptions.remove(subscription)
            if not subscriptions:
                del self._broker.subscriptions[node]
        self._mine.clear()
