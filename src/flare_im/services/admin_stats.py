"""Server statistics for admins (issue U8): online users and devices, connections per node, events per second,
active conversations, daily active users.

Every node samples itself (its hub and the number of event ids its Snowflake handed out, i.e. messages and
operations appended) once a second and writes the sample to the admin store every ``interval_s``; a node whose
sample is older than three intervals is left out. With several nodes, ``online_users`` adds each node's distinct
users, so a user with devices on two nodes counts twice (``online_devices`` is exact). Active conversations are
those with an event in the last ``window_s``, counted by the message store (the embedded SQLite log; None when the
store cannot say). Daily active users are the users that authenticated (a token checked by REST or the WebSocket,
a login, a refresh) on a UTC day, recorded by every node within ``activity_flush_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from flare_im.backends.admin.base import AdminStore, NodeStats
from flare_im.gateway.hub import Hub
from flare_im.ids import Snowflake, now_ms
from flare_im.services.admin import AccountGate

log = logging.getLogger(__name__)

ActiveConversations = Callable[[int], Awaitable[int | None]]  # since epoch ms -> conversations with an event
RATE_WINDOW_S = 10.0  # events per second are averaged over this long


class AdminStats:
    def __init__(
        self,
        *,
        store: AdminStore,
        hub: Hub,
        ids: Snowflake,
        node: str,
        gate: AccountGate,
        active_conversations: ActiveConversations,
        interval_s: float = 5.0,
    ) -> None:
        self._store = store
        self._hub = hub
        self._ids = ids
        self.node = node
        self._gate = gate
        self._active = active_conversations
        self._interval_s = interval_s
        self._samples: deque[tuple[float, int]] = deque(maxlen=int(RATE_WINDOW_S) + 2)
        self._task: asyncio.Task[None] | None = None

    def local(self) -> NodeStats:
        now = time.monotonic()
        issued = self._ids.issued
        rate = 0.0
        if self._samples:  # over the last RATE_WINDOW_S (at least one second: right after start, too)
            t0, n0 = self._samples[0]
            rate = (issued - n0) / max(now - t0, 1.0)
        hub = self._hub
        return NodeStats(self.node, now_ms(), len(hub), hub.online_users(), issued, round(rate, 2))

    async def snapshot(self, window_s: int) -> dict[str, Any]:
        local = self.local()
        await self._store.put_node_stats(local)
        fresh_after = local.at - int(3 * self._interval_s * 1000)
        nodes = [n for n in await self._store.node_stats() if n.at >= fresh_after or n.node == self.node]
        return {
            "at": local.at,
            "online_users": sum(n.users for n in nodes),
            "online_devices": sum(n.connections for n in nodes),
            "events_per_s": round(sum(n.events_per_s for n in nodes), 2),
            "active_conversations": await self._active(local.at - window_s * 1000),
            "window_s": window_s,
            "nodes": [
                {
                    "node": n.node,
                    "at": n.at,
                    "connections": n.connections,
                    "users": n.users,
                    "events": n.events,
                    "events_per_s": n.events_per_s,
                }
                for n in nodes
            ],
        }

    async def daily_active(self, first: str, last: str) -> tuple[dict[str, int], int]:
        await self._gate.flush_activity()  # what this node saw so far counts at once
        return await self._store.daily_active(first, last)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        written = 0.0
        while True:
            now = time.monotonic()
            self._samples.append((now, self._ids.issued))
            if now - written >= self._interval_s:
                written = now
                try:
                    await self._store.put_node_stats(self.local())
                except Exception as exc:
                    log.warning("cannot write this node's statistics: %r", exc)
            await asyncio.sleep(1.0)
