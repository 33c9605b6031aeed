"""Fan-out across nodes (src/flare_im/gateway/cluster.py): two nodes in one process over the in-memory route
table and node bus (the same contract as Redis, tested in tests/contract)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from flare_im.backends.bus.memory import MemoryBroker, MemoryNodeBus
from flare_im.backends.routes.memory import MemoryRouteState, MemoryRouteTable
from flare_im.gateway.cluster import ClusterFanout
from flare_im.gateway.hub import Hub
from flare_im.protocol.codec import Encoding
from flare_im.protocol.frames import Message, PresenceState, Receipt, TypingNotice
from flare_im.services.presence import PresenceService


@dataclass(eq=False)
class FakePeer:
    user: str
    device: str
    encoding: Encoding = Encoding.JSON
    frames: list[dict[str, object]] = field(default_factory=list)

    def push_framed(self, frame: bytes, bulk: bool = False) -> None:
        # A server-to-client WebSocket frame: 2-byte header (payloads here are < 126 bytes) or 4 bytes.
        length = frame[1] & 0x7F
        payload = frame[2:] if length < 126 else frame[4:]
        self.frames.append(msgspec.json.decode(payload))

    def kick(self, code: int, reason: str, *, reconnect: bool, retry_after_ms: int = 0) -> None:
        raise AssertionError("not kicked in these tests")


async def _node(name: str, state: MemoryRouteState, broker: MemoryBroker) -> ClusterFanout:
    holder: list[ClusterFanout] = []
    hub = Hub(on_route=lambda uid, device, up: holder[0].route_changed(uid, device, up))
    fanout = ClusterFanout(hub, MemoryRouteTable(ttl_s=5, state=state), MemoryNodeBus(broker), name, heartbeat_s=0.05)
    holder.append(fanout)
    await fanout.start()
    return fanout


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for what a timer (heartbeat, presence debounce) does: as long as a busy machine needs."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the condition reads plain state a timer task changes
            await asyncio.sleep(0.01)


async def test_a_message_reaches_devices_on_every_node_once() -> None:
    state, broker = MemoryRouteState(), MemoryBroker()
    a, b = await _node("a", state, broker), await _node("b", state, broker)
    try:
        alice_phone, alice_laptop, bob = FakePeer("alice", "phone"), FakePeer("alice", "laptop"), FakePeer("bob", "p")
        a.hub.register(alice_phone)
        b.hub.register(alice_laptop)
        b.hub.register(bob)
        await _settle()  # the route writes
        message = Message("d:alice:bob", 1, "10", "alice", "c1", "text", {"text": "hi"}, 1)
        a.deliver_message(["alice", "bob"], message, skip=("alice", "phone"))
        await _settle()
        assert alice_phone.frames == []  # the sending device gets the ack instead
        assert [f["seq"] for f in alice_laptop.frames] == [1]
        assert [f["seq"] for f in bob.frames] == [1]
        assert (a.sent, b.received) == (1, 1)  # one publish for both users on node b

        b.deliver_receipt(["alice"], Receipt("d:alice:bob", "bob", "read", 1), skip=None)
        b.deliver_typing(["alice"], TypingNotice("d:alice:bob", "bob"))
        await _settle()
        assert [f["type"] for f in alice_phone.frames] == ["receipt", "typing"]
        assert [f["type"] for f in alice_laptop.frames] == ["msg", "receipt", "typing"]
    finally:
        await a.close()
        await b.close()


async def test_routes_follow_disconnects_and_heartbeats_rebuild_them() -> None:
    state, broker = MemoryRouteState(), MemoryBroker()
    a, b = await _node("a", state, broker), await _node("b", state, broker)
    try:
        bob = FakePeer("bob", "p")
        b.hub.register(bob)
        await _settle()
        b.hub.unregister(bob)
        await _settle()
        a.deliver_message(["bob"], Message("g:x", 1, "1", "carl", "c", "text", {"text": "x"}, 1), skip=None)
        await _settle()
        assert a.sent == 0  # bob is on no node any more
        b.hub.register(bob)
        await _settle()
        state.routes.clear()  # the table lost its routes (Redis restarted empty)
        await _until(lambda: "bob" in state.routes)  # a heartbeat re-sends node b's list
        a.deliver_message(["bob"], Message("g:x", 2, "2", "carl", "c2", "text", {"text": "y"}, 1), skip=None)
        await _settle()
        assert [f["seq"] for f in bob.frames] == [2]
    finally:
        await a.close()
        await b.close()


@dataclass(eq=False)
class FakeWatcher:
    states: list[tuple[str, bool]] = field(default_factory=list)

    def push_presence(self, state: PresenceState) -> None:
        self.states.append((state.user, state.online))


async def test_presence_spans_the_nodes() -> None:
    state, broker = MemoryRouteState(), MemoryBroker()
    a, b = await _node("a", state, broker), await _node("b", state, broker)
    presence: dict[str, PresenceService] = {}
    for node in (a, b):
        presence[node.node] = PresenceService(node.hub.online, debounce_s=0.05, relay=node)
        node.on_presence = presence[node.node].remote
    try:
        phone = FakePeer("bob", "phone")
        b.hub.register(phone)
        presence["b"].connected("bob")
        await _settle()
        watcher = FakeWatcher()
        [bob] = await presence["a"].subscribe_current(watcher, ["bob"])  # connected on the other node
        assert bob.online
        laptop = FakePeer("bob", "laptop")  # a second device, on node a
        a.hub.register(laptop)
        presence["a"].connected("bob")
        b.hub.unregister(phone)
        presence["b"].disconnected("bob")
        await asyncio.sleep(0.1)
        await _settle()
        assert watcher.states == []  # still online on node a: nobody is told otherwise
        a.hub.unregister(laptop)
        presence["a"].disconnected("bob")
        await _until(lambda: bool(watcher.states))  # after the debounce
        await _settle()
        assert watcher.states == [("bob", False)]
        other = FakeWatcher()
        [seen] = await presence["b"].subscribe_current(other, ["bob"])
        assert not seen.online
        assert seen.last_seen > 0  # node b learnt it from node a's announcement
    finally:
        await a.close()
        await b.close()


async def test_broadcast_notices_go_to_other_nodes_after_the_frames_queued_with_them() -> None:
    """The outbox's bulk lane (services/priority.py): notices queued first, a call queued after them in the same
    loop turn, and the call is published to the other node first; the notices follow in their order."""
    state, broker = MemoryRouteState(), MemoryBroker()
    a, b = await _node("a", state, broker), await _node("b", state, broker)
    try:
        bob = FakePeer("bob", "p")
        b.hub.register(bob)
        await _settle()
        for i in range(1, 4):
            notice = Message("d:bob:system", i, str(i), "system", f"bc:b{i}:bob", "system", {"text": "n"}, 1)
            a.deliver_message(["bob"], notice, skip=None)
        call = Message("d:alice:bob", 1, "9", "alice", "c", "custom", {"data": {"type": "call"}}, 1)
        a.deliver_message(["bob"], call, skip=None)
        await _until(lambda: len(bob.frames) == 4)
        assert [(f["conv"], f["seq"]) for f in bob.frames] == [
            ("d:alice:bob", 1),
            ("d:bob:system", 1),
            ("d:bob:system", 2),
            ("d:bob:system", 3),
        ]
    finally:
        await a.close()
        await b.close()
