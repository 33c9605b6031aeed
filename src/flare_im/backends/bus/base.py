"""The node bus port: payloads from one node to another (delivery to devices connected elsewhere).

Delivery is at-most-once: a payload published while the receiver is not subscribed, is disconnected from
the bus, or is too slow is lost, and nobody is told. The seq log is what makes delivery reliable (a device
that sees a gap pulls the missing range), so the bus never retries and never blocks the sender.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Handler = Callable[[bytes], None]


class NodeBus(Protocol):
    def publish(self, node: str, payload: bytes) -> None:
        """Queue ``payload`` for the node ``node``; never blocks (when the bounded queue is full the payload
        is dropped). Payloads one bus publishes to one node arrive in publish order, none twice."""
        ...

    async def subscribe(self, node: str, handler: Handler) -> None:
        """Call ``handler`` with each payload published to ``node`` from now on (returns once the
        subscription is active), in arrival order, one at a time. A handler that raises is logged and
        keeps receiving. One handler per node per bus."""
        ...

    async def close(self) -> None:
        """Stop delivering to this bus's handlers (none is called after this returns) and send what is
        queued, waiting a bounded time."""
        ...
