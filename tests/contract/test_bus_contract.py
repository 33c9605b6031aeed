"""Contract of the NodeBus port (src/flare_im/backends/bus/base.py), for every backend.

``bus_backend.open()`` opens a bus over the backend's shared broker (one per node).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from flare_im.backends.bus.base import NodeBus


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the condition is a plain list the handler appends to
            await asyncio.sleep(0.005)


async def test_a_payload_reaches_the_node_it_was_published_to(bus_backend: Any) -> None:
    sender: NodeBus = bus_backend.open()
    receiver: NodeBus = bus_backend.open()
    got: list[bytes] = []
    await receiver.subscribe("n2", got.append)
    sender.publish("n2", b"\x00hello\xff")
    await until(lambda: len(got) == 1)
    assert got == [b"\x00hello\xff"]


async def test_1000_payloads_arrive_in_publish_order(bus_backend: Any) -> None:
    sender: NodeBus = bus_backend.open()
    receiver: NodeBus = bus_backend.open()
    got: list[bytes] = []
    await receiver.subscribe("n2", got.append)
    payloads = [f"payload-{i}".encode() * (1 + i % 7) for i in range(1000)]
    for payload in payloads:
        sender.publish("n2", payload)
    await until(lambda: len(got) >= 1000)
    assert got == payloads


async def test_each_sender_keeps_its_order(bus_backend: Any) -> None:
    senders: list[NodeBus] = [bus_backend.open(), bus_backend.open()]
    receiver: NodeBus = bus_backend.open()
    got: list[bytes] = []
    await receiver.subscribe("n3", got.append)
    for i in range(500):
        for s, sender in enumerate(senders):
            sender.publish("n3", f"{s}:{i}".encode())
        if i % 100 == 0:
            await asyncio.sleep(0)  # let the writers run while others still publish
    await until(lambda: len(got) >= 1000)
    for s in range(2):
        assert [p for p in got if p.startswith(f"{s}:".encode())] == [f"{s}:{i}".encode() for i in range(500)]


async def test_no_cross_talk_between_nodes(bus_backend: Any) -> None:
    sender: NodeBus = bus_backend.open()
    bus_1: NodeBus = bus_backend.open()
    bus_2: NodeBus = bus_backend.open()
    got_1: list[bytes] = []
    got_2: list[bytes] = []
    await bus_1.subscribe("n1", got_1.append)
    await bus_2.subscribe("n2", got_2.append)
    for i in range(100):
        sender.publish("n1", f"to-1 {i}".encode())
        sender.publish("n2", f"to-2 {i}".encode())
        sender.publish("n12", b"to a node whose name starts like n1")
    sender.publish("n1", b"end")
    sender.publish("n2", b"end")
    await until(lambda: got_1[-1:] == [b"end"] and got_2[-1:] == [b"end"])
    assert got_1 == [f"to-1 {i}".encode() for i in range(100)] + [b"end"]
    assert got_2 == [f"to-2 {i}".encode() for i in range(100)] + [b"end"]


async def test_one_bus_can_serve_several_nodes(bus_backend: Any) -> None:
    sender: NodeBus = bus_backend.open()
    receiver: NodeBus = bus_backend.open()
    got: list[tuple[str, bytes]] = []
    await receiver.subscribe("a", lambda p: got.append(("a", p)))
    await receiver.subscribe("b", lambda p: got.append(("b", p)))
    with pytest.raises(ValueError, match="already subscribed"):
        await receiver.subscribe("a", lambda p: None)
    sender.publish("b", b"1")
    sender.publish("a", b"2")
    await until(lambda: len(got) == 2)
    assert sorted(got) == [("a", b"2"), ("b", b"1")]


async def test_nothing_is_replayed_to_a_late_subscriber(bus_backend: Any) -> None:
    sender: NodeBus = bus_backend.open()
    receiver: NodeBus = bus_backend.open()
    witness: NodeBus = bus_backend.open()  # subscribed from the start: shows when each payload went through
    seen_by_witness: list[bytes] = []
    await witness.subscribe("n2", seen_by_witness.append)
    sender.publish("n2", b"before the receiver listened")
    await until(lambda: len(seen_by_witness) == 1)
    got: list[bytes] = []
    await receiver.subscribe("n2", got.append)
    sender.publish("n2", b"after")
    await until(lambda: len(seen_by_witness) == 2 and len(got) >= 1)
    assert got == [b"after"]  # payloads arrive in order: a replayed "before" would have come first


async def test_closing_stops_delivery(bus_backend: Any) -> None:
    sender: NodeBus = bus_backend.open()
    closing: NodeBus = bus_backend.open()
    witness: NodeBus = bus_backend.open()  # also subscribed to n1: shows when later payloads have arrived
    got: list[bytes] = []
    seen_by_witness: list[bytes] = []
    await closing.subscribe("n1", got.append)
    await witness.subscribe("n1", seen_by_witness.append)
    sender.publish("n1", b"first")
    await until(lambda: got == [b"first"])
    await closing.close()
    for i in range(10):
        sender.publish("n1", f"late {i}".encode())
    await until(lambda: len(seen_by_witness) == 11)
    assert got == [b"first"]


async def test_close_sends_what_is_queued(bus_backend: Any) -> None:
    sender: NodeBus = bus_backend.open()
    receiver: NodeBus = bus_backend.open()
    got: list[bytes] = []
    await receiver.subscribe("n2", got.append)
    for i in range(200):
        sender.publish("n2", str(i).encode())
    await sender.close()
    sender.publish("n2", b"after close")  # dropped, not an error
    await until(lambda: len(got) >= 200)
    await asyncio.sleep(0.02)
    assert got == [str(i).encode() for i in range(200)]


async def test_a_failing_handler_keeps_receiving(bus_backend: Any) -> None:
    sender: NodeBus = bus_backend.open()
    receiver: NodeBus = bus_backend.open()
    got: list[bytes] = []

    def handler(payload: bytes) -> None:
        if payload == b"bad":
            raise RuntimeError("handler bug")
        got.append(payload)

    await receiver.subscribe("n2", handler)
    sender.publish("n2", b"bad")
    sender.publish("n2", b"good")
    await until(lambda: got == [b"good"])
