"""Delivery priority (spec R4): call signalling and system notices go ahead of bulk traffic.

Three lanes. **Urgent**: call signalling, a ``custom`` message whose ``data.type`` is ``"call"`` (the convention
the push service already treats as a call). **Bulk**: broadcast notices, the ``system`` messages a broadcast
appends (client id ``bc:<broadcast>:<user>``). **Normal**: everything else, system notices to one user included.

A queue can only be reordered where one forms, so the lanes differ in three places:

- A connection whose client is not reading (its write buffer past ``send_buffer_bytes``) holds bulk frames back
  in a queue of its own while other frames still go to its socket; the held frames follow, in order, once the
  client reads. Past a bound the oldest held frames are dropped: a push is at most once, and the device pulls
  what it missed by seq (DESIGN.md §4), so bulk never makes a reading client a slow consumer.
- In a cluster, the outbox to other nodes publishes bulk frames after everything else queued (gateway/cluster.py).
- Broadcast delivery waits while an urgent send is under way on the node (``UrgentSends``), so a call's append
  and fan-out do not queue behind notices started after it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flare_im.protocol.frames import Msg

BROADCAST_CMID_PREFIX = "bc:"


def is_call(kind: str, body: dict[str, Any]) -> bool:
    """Call signalling: a ``custom`` message with ``data.type == "call"``."""
    if kind != "custom":
        return False
    data = body.get("data")
    return isinstance(data, dict) and data.get("type") == "call"


def is_bulk(frame: object) -> bool:
    """A frame of bulk traffic: a broadcast's notice."""
    return isinstance(frame, Msg) and frame.kind == "system" and frame.cmid.startswith(BROADCAST_CMID_PREFIX)


class UrgentSends:
    """Counts the urgent sends under way on this node; bulk work waits until there are none."""

    def __init__(self) -> None:
        self._running = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @property
    def running(self) -> int:
        return self._running

    def begin(self) -> None:
        self._running += 1
        self._clear.clear()

    def end(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._clear.set()

    async def wait_clear(self) -> None:
        """Return once no urgent send is under way (at once when none is)."""
        if self._running:
            await self._clear.wait()
