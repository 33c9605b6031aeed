"""The bound of presence's last-seen times (src/flare_im/services/presence.py): at most ``max_last_seen``
users, the ones set longest ago dropped first; a dropped one is unknown (0) on one node, as after a restart,
and read again from the route table with several nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from flare_im.protocol.frames import PresenceState
from flare_im.services.presence import PresenceService

BOUND = 3


class Watcher:
    def __init__(self) -> None:
        self.seen: list[PresenceState] = []

    def push_presence(self, state: PresenceState) -> None:
        self.seen.append(state)


class RouteTable:
    """Stands in for the other nodes: nobody is online elsewhere; it keeps every last-seen time."""

    def __init__(self) -> None:
        self.last_seen: dict[str, int] = {}

    def announce(self, state: PresenceState) -> None:
        if not state.online:
            self.last_seen[state.user] = state.last_seen

    async def states(self, users: Sequence[str]) -> dict[str, PresenceState]:
        return {
            u: PresenceState(user=u, online=False, last_seen=self.last_seen[u]) for u in users if u in self.last_seen
        }

    async def online_elsewhere(self, user: str) -> bool:
        return False


async def come_and_go(presence: PresenceService, online: set[str], user: str) -> None:
    online.add(user)
    presence.connected(user)
    online.discard(user)
    presence.disconnected(user)
    for _ in range(3):  # the debounce (0 s) and, with a relay, the check of the other nodes
        await asyncio.sleep(0)


async def test_last_seen_keeps_the_most_recent_users() -> None:
    online: set[str] = set()
    presence = PresenceService(online.__contains__, debounce_s=0, max_last_seen=BOUND)
    users = [f"u{i}" for i in range(10)]
    for user in users:
        await come_and_go(presence, online, user)
        assert len(presence._last_seen) <= BOUND
    recent = [presence.state(u).last_seen for u in users[-BOUND:]]
    assert all(recent)
    assert recent == sorted(recent)
    assert [presence.state(u).last_seen for u in users[:-BOUND]] == [0] * (len(users) - BOUND)  # as after a restart
    await come_and_go(presence, online, "u0")  # seen again: known again, the oldest of the others goes
    assert presence.state("u0").last_seen >= recent[-1]
    assert presence.state(users[-BOUND]).last_seen == 0
    assert len(presence._last_seen) == BOUND


async def test_a_dropped_last_seen_is_read_again_from_the_route_table() -> None:
    online: set[str] = set()
    table = RouteTable()
    presence = PresenceService(online.__contains__, debounce_s=0, relay=table, max_last_seen=BOUND)
    users = [f"u{i}" for i in range(8)]
    for user in users:
        await come_and_go(presence, online, user)
    assert set(table.last_seen) == set(users)
    states = await presence.subscribe_current(Watcher(), users)
    assert [(s.user, s.online, s.last_seen) for s in states] == [(u, False, table.last_seen[u]) for u in users]
    assert len(presence._last_seen) <= BOUND


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_last_seen"):
        PresenceService(lambda _: False, debounce_s=0, max_last_seen=0)
