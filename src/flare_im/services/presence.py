"""Presence: online while any of a user's devices is connected, last seen when the last one left.

Derived from this node's connections (embedded mode: the only node). Changes go to the connections that
subscribed to the user. Flapping is debounced: a user whose last device drops is announced offline only
after ``debounce_s`` without a reconnect, so a quick reconnect produces no event at all. Last-seen times
are kept in memory: after a server restart a user's last seen is unknown (0) until they connect again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Protocol

from flare_im.ids import now_ms
from flare_im.protocol.errors import invalid
from flare_im.protocol.frames import PresenceState

MAX_SUBSCRIPTIONS = 1000  # users one connection may watch


class Watcher(Protocol):
    """A connection that subscribed to presence changes."""

    def push_presence(self, state: PresenceState) -> None: ...


class PresenceService:
    def __init__(self, is_online: Callable[[str], bool], *, debounce_s: float) -> None:
        self._is_online = is_online  # does the user have a connected device (the hub)
        self._debounce_s = debounce_s
        self._announced_online: set[str] = set()
        self._last_seen: dict[str, int] = {}
        self._pending_offline: dict[str, asyncio.TimerHandle] = {}
        self._watchers: dict[str, set[Watcher]] = {}  # watched user -> connections
        self._watching: dict[Watcher, set[str]] = {}  # connection -> watched users

    def state(self, user: str) -> PresenceState:
        online = user in self._announced_online
        return PresenceState(user=user, online=online, last_seen=0 if online else self._last_seen.get(user, 0))

    def connected(self, user: str) -> None:
        """A device of ``user`` authenticated."""
        pending = self._pending_offline.pop(user, None)
        if pending is not None:
            pending.cancel()  # back within the debounce time: nobody was told it left
            return
        if user not in self._announced_online:
            self._announced_online.add(user)
            self._publish(user)

    def disconnected(self, user: str) -> None:
        """A device of ``user`` left; when it was the last one, announce offline after the debounce."""
        if self._is_online(user) or user in self._pending_offline or user not in self._announced_online:
            return
        loop = asyncio.get_running_loop()
        self._pending_offline[user] = loop.call_later(self._debounce_s, self._went_offline, user)

    def _went_offline(self, user: str) -> None:
        self._pending_offline.pop(user, None)
        if self._is_online(user):
            return
        self._announced_online.discard(user)
        self._last_seen[user] = now_ms()
        self._publish(user)

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

    def _publish(self, user: str) -> None:
        watchers = self._watchers.get(user)
        if watchers:
            state = self.state(user)
            for watcher in list(watchers):
                watcher.push_presence(state)
