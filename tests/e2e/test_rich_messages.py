"""Rich message kinds over real sockets: stored and delivered as sent; a body that does not fit is refused."""

from __future__ import annotations

from flare_im.protocol.errors import ErrorCode

from .conftest import Harness
from .witness import Wire, Witness, rest_barrier

DM = "d:alice:bob"


async def test_rich_kinds_round_trip(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice = await harness.device("alice")
    wire = Wire()
    bob = await harness.device("bob", on_frame=wire)
    sent = [
        ("image", {"url": "https://cdn.example/p.png", "width": 800, "height": 600}),
        ("location", {"lat": 35.68, "lng": 139.69, "name": "Tokyo"}),
        ("custom", {"data": {"card": "order", "id": 42}}),
        ("text", {"text": "@bob look", "mentions": ["bob"]}),
    ]
    acks = [await alice.send(DM, kind=kind, body=body) for kind, body in sent]
    got = [await bob.next_message() for _ in sent]
    assert [(m.kind, m.body) for m in got] == sent
    assert [(m.kind, m.body) for m in await bob.history(DM)] == sent
    # In order and once each, counted on the wire.
    barrier = await rest_barrier(harness, DM, "alice", wire)
    assert wire.seqs(DM) == [*(a.seq for a in acks), barrier]

    # A body that does not fit its kind, or an unknown kind: refused, nothing stored or pushed.
    pair = await Witness.open(harness, DM, ["alice", "bob"])
    await pair.refused(ErrorCode.INVALID, alice.send(DM, kind="image", body={"width": 5}, attempts=1))
    await pair.refused(ErrorCode.INVALID, alice.send(DM, kind="hologram", body={"x": 1}, attempts=1))
    await pair.refused(ErrorCode.INVALID, harness.rest("alice").send(DM, "c-holo", {"x": 1}, kind="hologram"))
