"""Fan-out across gateway nodes (DESIGN.md §3 step 6): local devices directly, the others over the node bus.

Each node keeps its devices in the shared route table (user -> device -> node): a route is written on
connect, removed on disconnect, and the node's whole list is re-sent with every heartbeat, so routes come
back after the table lost them and die with a node that stops beating. A frame for users on other nodes is
published once per node, with the users that node should push it to; the receiving node pushes it to its
local devices. Lookups for frames queued in one loop iteration share one round trip.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Iterable, Sequence

import msgspec

from flare_im.aio import stop_tasks
from flare_im.backends.bus.base import NodeBus
from flare_im.backends.routes.base import RouteTable
from flare_im.gateway.hub import Hub
from flare_im.protocol.frames import (
    ConvSettings,
    Hidden,
    Kick,
    Message,
    Presence,
    PresenceState,
    Receipt,
    ServerFrame,
    TypingNotice,
    msg_from_message,
)
from flare_im.services.priority import is_bulk

log = logging.getLogger(__name__)

_Outgoing = tuple[list[str], ServerFrame, tuple[str, str] | None]
_BATCH = 1024  # frames per route lookup


class Envelope(msgspec.Struct, array_like=True):
    """A frame for some users' devices on the receiving node (``skip``: the device that caused it). A ``kick``
    frame closes the connections of ``uids`` instead, and its ``skip`` names the only device to close."""

    uids: list[str]
    frame: ServerFrame
    skip: tuple[str, str] | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Envelope).decode


class ClusterFanout:
    """The router's Fanout when several nodes serve clients."""

    def __init__(self, hub: Hub, routes: RouteTable, bus: NodeBus, node: str, *, heartbeat_s: float) -> None:
        self.hub = hub
        self._routes = routes
        self._bus = bus
        self.node = node
        self._heartbeat_s = heartbeat_s
        # None in the outbox only wakes the pump for the bulk lane (broadcast notices, gateway/priority.py),
        # which is published after everything else queued.
        self._outbox: asyncio.Queue[_Outgoing | None] = asyncio.Queue()
        self._bulk: collections.deque[_Outgoing] = collections.deque()
        self._route_writes: asyncio.Queue[tuple[str, str, bool]] = asyncio.Queue()
        self._announcements: asyncio.Queue[PresenceState] = asyncio.Queue()
        self.on_presence: Callable[[PresenceState], None] | None = None  # presence changes other nodes saw
        self._tasks: list[asyncio.Task[None]] = []
        self.sent = 0  # frames published to other nodes
        self.received = 0

    async def start(self) -> None:
        await self._bus.subscribe(self.node, self._on_payload)
        await self._routes.heartbeat(self.node, [])
        self._tasks = [
            asyncio.ensure_future(self._pump()),
            asyncio.ensure_future(self._write_routes()),
            asyncio.ensure_future(self._beat()),
            asyncio.ensure_future(self._announce_presence()),
        ]

    async def close(self) -> None:
        await stop_tasks(self._tasks)
        await self._bus.close()

    # ------------------------------------------------------------------ routes

    def route_changed(self, uid: str, device: str, connected: bool) -> None:
        """The hub's hook: a device connected to or left this node."""
        self._route_writes.put_nowait((uid, device, connected))

    async def _write_routes(self) -> None:
        while True:
            uid, device, connected = await self._route_writes.get()
            try:
                if connected:
                    await self._routes.register(uid, device, self.node)
                else:
                    await self._routes.unregister(uid, device, self.node)
            except Exception:  # the next heartbeat writes the whole list again
                log.exception("route update for %s/%s failed", uid, device)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self._routes.heartbeat(self.node, [(p.user, p.device) for p in self.hub.peers()])
            except Exception:
                log.exception("route heartbeat failed")

    # ------------------------------------------------------------------ Fanout

    def deliver_message(self, uids: Iterable[str], message: Message, *, skip: tuple[str, str] | None) -> None:
        self._both(uids, msg_from_message(message), skip)

    def deliver_receipt(self, uids: Iterable[str], receipt: Receipt, *, skip: tuple[str, str] | None) -> None:
        self._both(uids, receipt, skip)

    def deliver_settings(self, uid: str, settings: ConvSettings, *, skip: tuple[str, str] | None) -> None:
        self._both((uid,), settings, skip)

    def deliver_hidden(self, uid: str, hidden: Hidden, *, skip: tuple[str, str] | None) -> None:
        self._both((uid,), hidden, skip)

    def deliver_typing(self, uids: Iterable[str], notice: TypingNotice) -> None:
        self._both(uids, notice, None)

    def deliver_frame(self, uids: Iterable[str], frame: ServerFrame, skip: tuple[str, str] | None) -> None:
        """Push any frame to the devices of ``uids`` on every node (notification settings, for one)."""
        self._both(uids, frame, skip)

    def _both(self, uids: Iterable[str], frame: ServerFrame, skip: tuple[str, str] | None) -> None:
        users = list(uids)
        self.hub.deliver_frame(users, frame, skip)
        if is_bulk(frame):
            self._bulk.append((users, frame, skip))
            self._outbox.put_nowait(None)
        else:
            self._outbox.put_nowait((users, frame, skip))

    async def _pump(self) -> None:
        """Publish queued frames to the nodes that hold their users' other devices, in queue order."""
        while True:
            first = await self._outbox.get()
            items = [first] if first is not None else []
            while not self._outbox.empty() and len(items) < _BATCH:
                item = self._outbox.get_nowait()
                if item is not None:
                    items.append(item)
            bulk = self._bulk
            while bulk and len(items) < _BATCH:
                items.append(bulk.popleft())
            if not items:  # wake-ups for bulk frames a batch before already took
                continue
            try:
                routes = await self._routes.lookup(sorted({u for users, _, _ in items for u in users}))
            except Exception:  # at-most-once: the devices find the gap by seq and pull it
                log.exception("route lookup failed; %d frames not sent to other nodes", len(items))
                continue
            for users, frame, skip in items:
                per_node: dict[str, list[str]] = {}
                for uid in users:
                    for device, node in routes.get(uid, {}).items():
                        if node != self.node and (skip is None or skip != (uid, device)):
                            targets = per_node.setdefault(node, [])
                            if not targets or targets[-1] != uid:
                                targets.append(uid)
                for node, targets in per_node.items():
                    self._bus.publish(node, _encode(Envelope(targets, frame, skip)))
                    self.sent += 1

    def _on_payload(self, payload: bytes) -> None:
        envelope = _decode(payload)
        self.received += 1
        frame = envelope.frame
        if isinstance(frame, Kick):
            device = envelope.skip[1] if envelope.skip is not None else None
            for uid in envelope.uids:
                self.hub.kick_user(uid, device, frame.code, frame.reason, reconnect=frame.reconnect)
            return
        if isinstance(frame, Presence) and not envelope.uids:  # a presence change another node saw
            if self.on_presence is not None:
                self.on_presence(PresenceState(user=frame.user, online=frame.online, last_seen=frame.last_seen))
            return
        self.hub.deliver_frame(envelope.uids, frame, envelope.skip)

    async def kick(self, uid: str, device: str | None, code: int, reason: str) -> int:
        """Close the connections of ``uid`` (only ``device`` when given) on every live node, this one at once;
        returns how many were closed here. Sent to every live node, not only where the routes point, so a
        device whose route is not written yet is closed too."""
        closed = self.hub.kick_user(uid, device, code, reason)
        only = (uid, device) if device else None
        payload = _encode(Envelope([uid], Kick(code=code, reason=reason, reconnect=False), only))
        for node in await self._routes.live_nodes():
            if node != self.node:
                self._bus.publish(node, payload)
        return closed

    # ------------------------------------------------------------------ PresenceRelay

    def announce(self, state: PresenceState) -> None:
        self._announcements.put_nowait(state)

    async def _announce_presence(self) -> None:
        while True:
            states = [await self._announcements.get()]
            while not self._announcements.empty():
                states.append(self._announcements.get_nowait())
            try:
                nodes = await self._routes.live_nodes()
            except Exception:
                log.exception("presence: live nodes unknown; %d changes not announced", len(states))
                continue
            for state in states:
                payload = _encode(Envelope([], Presence(state.user, state.online, state.last_seen)))
                for node in nodes:
                    if node != self.node:
                        self._bus.publish(node, payload)

    async def states(self, users: Sequence[str]) -> dict[str, PresenceState]:
        routes = await self._routes.lookup(users)
        seen = await self._routes.last_seen([u for u in users if u not in routes])
        out = {u: PresenceState(user=u, online=True) for u in routes}
        out.update((u, PresenceState(user=u, online=False, last_seen=t)) for u, t in seen.items())
        return out

    async def online_elsewhere(self, user: str) -> bool:
        routes = await self._routes.lookup([user])
        return any(node != self.node for node in routes.get(user, {}).values())
