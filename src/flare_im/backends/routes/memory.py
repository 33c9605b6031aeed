"""In-process route table (embedded mode, and the twin of the Redis one in the contract tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from flare_im.backends.routes.base import Routes
from flare_im.ids import now_ms


@dataclass(slots=True)
class MemoryRouteState:
    """What route tables given the same state share (as nodes share Redis)."""

    routes: Routes = field(default_factory=dict)  # user -> device -> node
    alive_until: dict[str, float] = field(default_factory=dict)  # node -> monotonic deadline
    seen: dict[str, int] = field(default_factory=dict)  # user -> epoch ms when the last device left
    swept_at: float = 0.0

    def clear(self) -> None:
        """Lose everything, as a Redis that restarted empty."""
        self.routes.clear()
        self.alive_until.clear()
        self.seen.clear()


class MemoryRouteTable:
    def __init__(
        self,
        *,
        ttl_s: float = 30.0,
        state: MemoryRouteState | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: monotonic seconds for node liveness (tests pass one they advance by hand)."""
        self._ttl_s = ttl_s
        self._clock = clock
        self._state = MemoryRouteState() if state is None else state

    def _alive(self, node: str, now: float) -> bool:
        return self._state.alive_until.get(node, 0.0) > now

    async def register(self, uid: str, device: str, node: str) -> None:
        self._state.routes.setdefault(uid, {})[device] = node

    async def unregister(self, uid: str, device: str, node: str) -> None:
        devices = self._state.routes.get(uid)
        if devices is None or devices.get(device) != node:
            return
        del devices[device]
        if not self._live_routes(uid, devices, self._clock()):
            self._state.seen[uid] = now_ms()

    async def lookup(self, uids: Sequence[str]) -> Routes:
        now = self._clock()
        found: Routes = {}
        for uid in uids:
            devices = self._state.routes.get(uid)
            if devices is None:
                continue
            had = len(devices)
            live = self._live_routes(uid, devices, now)
            if live:
                found[uid] = live
            elif had:
                self._state.seen[uid] = now_ms()
        return found

    def _live_routes(self, uid: str, devices: dict[str, str], now: float) -> dict[str, str]:
        """``devices`` without its routes on dead nodes (which are deleted)."""
        live = {d: n for d, n in devices.items() if self._alive(n, now)}
        if not live:
            del self._state.routes[uid]
        elif len(live) != len(devices):
            self._state.routes[uid] = live
        return live

    async def heartbeat(self, node: str, routes: Iterable[tuple[str, str]]) -> None:
        now = self._clock()
        state = self._state
        state.alive_until[node] = now + self._ttl_s
        for uid, device in routes:
            devices = state.routes.setdefault(uid, {})
            current = devices.get(device)
            if current is None or current == node or not self._alive(current, now):
                devices[device] = node
        if now - state.swept_at >= self._ttl_s:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Drop dead nodes and their routes (users nobody looks up would keep them forever); a user left
        with no route went offline now."""
        state = self._state
        state.swept_at = now
        dead = {n for n, until in state.alive_until.items() if until <= now}
        if not dead:
            return
        for n in dead:
            del state.alive_until[n]
        for uid, devices in list(state.routes.items()):
            if any(n in dead for n in devices.values()) and not self._live_routes(uid, devices, now):
                state.seen[uid] = now_ms()

    async def last_seen(self, uids: Sequence[str]) -> dict[str, int]:
        seen = self._state.seen
        return {uid: seen[uid] for uid in uids if uid in seen}

    async def live_nodes(self) -> set[str]:
        now = self._clock()
        return {n for n in self._state.alive_until if self._alive(n, now)}
