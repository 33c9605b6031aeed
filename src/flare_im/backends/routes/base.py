"""The route table port: which node each connected device of a user is on, and which nodes are alive.

Presence follows from it: a user is online while a device of theirs has a route on a live node, and the
table keeps the time a user's last device left (``last_seen``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

Routes = dict[str, dict[str, str]]  # user -> device -> node


class RouteTable(Protocol):
    async def register(self, uid: str, device: str, node: str) -> None:
        """Route ``(uid, device)`` to ``node``, replacing any earlier route of that device (the newest
        connection wins). The route counts once ``node`` is alive (``heartbeat``)."""
        ...

    async def unregister(self, uid: str, device: str, node: str) -> None:
        """Remove the route of ``(uid, device)`` only if it still points at ``node`` (a device that has
        since connected to another node keeps that route). When it was the user's last route on a live
        node, the user's last seen time becomes now."""
        ...

    async def lookup(self, uids: Sequence[str]) -> Routes:
        """The routes of ``uids`` on live nodes, ``{uid: {device: node}}``; users with none are absent.
        One round trip to the store however many users. Routes on dead nodes are deleted as they are
        met (and a user left with none gets a last seen time)."""
        ...

    async def heartbeat(self, node: str, routes: Iterable[tuple[str, str]]) -> None:
        """Mark ``node`` alive for the table's ``ttl_s`` and re-register its routes: ``routes`` is the
        node's full current list of ``(uid, device)``. A route is written unless the device is routed to
        another live node meanwhile (a stale list never steals a device that moved), so after the store
        lost its routes one heartbeat per node rebuilds them. A node that stops heartbeating is dead
        ``ttl_s`` after its last heartbeat: its routes stop counting at once."""
        ...

    async def last_seen(self, uids: Sequence[str]) -> dict[str, int]:
        """When each user's last device left (epoch ms); users never seen leaving are absent. Says
        nothing about being online now (see ``lookup``)."""
        ...

    async def live_nodes(self) -> set[str]:
        """The nodes whose last heartbeat is less than ``ttl_s`` old."""
        ...
