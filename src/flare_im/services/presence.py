"""Presence: online while any of a user's devices is connected, last seen when the last one left.

Derived from the user's connections. Changes go to the connections that subscribed to the user. Flapping
is debounced: a user whose last device drops is announced offline only after ``debounce_s`` without a
reconnect, so a quick reconnect produces no event at all. The announced last-seen time is when the last
connection closed, not when the debounce ended. On one node last-seen times are kept in memory, for the
``max_last_seen`` users who went offline most recently: an older one, like every one after a restart, is
unknown (0) until the user connects and leaves again. With several nodes the route table keeps them, and a
subscription reads the ones this node does not have from it.

With several nodes a ``relay`` (gateway/cluster.py) connects the nodes' views: a node announces its
changes to the others, asks the route table before announcing a user offline (a device may be connected
elsewhere), and fills a new subscription's states from the route table.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from flare_im.ids import now_ms
from flare_im.protocol.errors import invalid
from flare_im.protocol.frames import PresenceState

MAX_SUBSCRIPTIONS = 1000  # users one connection may watch
DEFAULT_MAX_LAST_SEEN = 100_000


class Watcher(Protocol):
    """A connection that subscribed to presence changes."""

    def push_presence(self, state: PresenceState) -> None: ...


class PresenceRelay(Protocol):
    """The other nodes (several-node mode)."""

    def announce(self, state: PresenceState) -> None:
        """Tell every other node that this node saw ``state.user`` come online or go offline."""
        ...

    async def states(self, users: Sequence[str]) -> dict[str, PresenceState]:
        """Users with a device on any live node (online), else their last seen time if known."""
        ...

    async def online_elsewhere(self, user: str) -> bool:
        """Does ``user`` have a device connected to another live node."""
        ...


class PresenceService:
    def __init__(
        self,
        is_online: Callable[[str], bool],
        *,
        debounce_s: float,
        relay: PresenceRelay | None = None,
        max_last_seen: int = DEFAULT_MAX_LAST_SEEN,
    ) -> None:
        """``max_last_seen``: users whose last-seen time is kept (the ones set longest ago are dropped)."""
        if max_last_seen < 1:
            raise ValueError("max_last_seen must be at least 1")
        self._relay = relay
        self._tasks: set[asyncio.Task[None]] = set()
        self._is_online = is_online  # does the user have a connected device (the hub)
        self._debounce_s = debounce_s
        self._announced_online: set[str] = set()
        self._max_last_seen = max_last_seen
        self._last_seen: OrderedDict[str, int] = OrderedDict()  # user -> ms, set longest ago first
        self._pending_offline: dict[str, tuple[asyncio.TimerHandle, int]] = {}  # user -> (timer, left at ms)
        self._watchers: dict[str, set[Watcher]] = {}  # watched user -> connections
        self._watching: dict[Watcher, set[str]] = {}  # connection -> watched users
        # Told (user, online, last_seen) when this node sees a user come online or go offline (webhooks).
        self.on_local_change: Callable[[str, bool, int], None] | None = None

    def state(self, user: str) -> PresenceState:
        online = user in self._announced_online
        return PresenceState(user=user, online=online, last_seen=0 if online else self._last_seen.get(user, 0))

    def connected(self, user: str) -> None:
        """A device of ``user`` authenticated."""
        pending = self._pending_offline.pop(user, None)
        if pending is not None:
            pending[0].cancel()  # back within the debounce time: nobody was told it left
            return
        if user not in self._announced_online:
            self._announced_online.add(user)
            self._publish(user, tell_others=True)
            if self.on_local_change is not None:
                self.on_local_change(user, True, 0)

    def disconnected(self, user: str) -> None:
        """A device of ``user`` left; when it was the last one, announce offline after the debounce."""
        if self._is_online(user) or user in self._pending_offline or user not in self._announced_online:
            return
        left_at = now_ms()  # last seen: now, when the last connection closed (not when the debounce ends)
        timer = asyncio.get_running_loop().call_later(self._debounce_s, self._went_offline, user, left_at)
        self._pending_offline[user] = (timer, left_at)

    def _went_offline(self, user: str, left_at: int) -> None:
        self._pending_offline.pop(user, None)
        if self._is_online(user):
            return
        if self._relay is not None:
            task = asyncio.ensure_future(self._offline_unless_elsewhere(self._relay, user, left_at))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._mark_offline(user, left_at, tell_others=False, local=True)

    async def _offline_unless_elsewhere(self, relay: PresenceRelay, user: str, left_at: int) -> None:
        try:
            elsewhere = await relay.online_elsewhere(user)
        except Exception:  # the route table is unreachable: say what this node knows
            elsewhere = False
        if not elsewhere and not self._is_online(user):
            self._mark_offline(user, left_at, tell_others=True, local=True)

    def _mark_offline(self, user: str, last_seen: int, *, tell_others: bool, local: bool = False) -> None:
        if user not in self._announced_online:
            return
        self._announced_online.discard(user)
        self._set_last_seen(user, last_seen)
        self._publish(user, tell_others=tell_others)
        if local and self.on_local_change is not None:
            self.on_local_change(user, False, last_seen)

    def remote(self, state: PresenceState) -> None:
        """Another node saw ``state.user`` come online or go offline."""
        user = state.user
        if state.online:
            if user not in self._announced_online:
                self._announced_online.add(user)
                self._publish(user, tell_others=False)
        elif not self._is_online(user):
            self._mark_offline(user, state.last_seen, tell_others=False)

    async def subscribe_current(self, watcher: Watcher, users: Iterable[str]) -> list[PresenceState]:
        """``subscribe``, with the states of users this node has not seen taken from the route table."""
        states = self.subscribe(watcher, users)
        if self._relay is None:
            return states
        unknown = [s.user for s in states if not s.online]
        if not unknown:
            return states
        found = await self._relay.states(unknown)
        for user, state in found.items():
            if state.online:
                self._announced_online.add(user)
            elif state.last_seen:
                self._set_last_seen(user, max(self._last_seen.get(user, 0), state.last_seen))
        current = [self.state(s.user) for s in states]
        # More users than the cache keeps: the ones it dropped just now are answered from what was read.
        return [
            PresenceState(user=s.user, online=False, last_seen=found[s.user].last_seen)
            if not s.online and s.user in found and found[s.user].last_seen > s.last_seen
            else s
            for s in current
        ]

    def _set_last_seen(self, user: str, ms: int) -> None:
        last_seen = self._last_seen
        last_seen[user] = ms
        last_seen.move_to_end(user)
        if len(last_seen) > self._max_last_seen:
            last_seen.popitem(last=False)

    def subscribe(self, watcher: Watcher, users: Iterable[str]) -> list[PresenceState]:
        """Replace ``watcher``'s subscription with ``users``; returns their current states."""
        wanted = list(dict.fromkeys(users))
        if len(wanted) > MAX_SUBSCRIPTIONS:
            raise invalid(f"at most {MAX_SUBSCRIPTIONS} users per presence subscription")
        self.unsubscribe(watcher)
        if wanted:
            self._watching[watcher] = set(wanted)
            for user in wanted:
                self._watchers.setdefault(user, set()).add(watcher)
        return [self.state(u) for u in wanted]

    def unsubscribe(self, watcher: Watcher) -> None:
        for user in self._watching.pop(watcher, ()):
            watchers = self._watchers.get(user)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[user]

    def _publish(self, user: str, *, tell_others: bool = False) -> None:
        state = self.state(user)
        if tell_others and self._relay is not None:
            self._relay.announce(state)
        watchers = self._watchers.get(user)
        if watchers:
            for watcher in list(watchers):
                watcher.push_presence(state)
