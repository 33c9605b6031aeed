"""Rich message kinds over real sockets: stored and delivered as sent; a body that does not fit is refused."""

from __future__ import annotations

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness

DM = "d:alice:bob"


async def test_rich_kinds_round_trip(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice = await harness.device("alice")
    bob = await harness.device("bob")
    sent = [
        ("image", {"url": "https://cdn.example/p.png", "width": 800, "height": 600}),
        ("location", {"lat": 35.68, "lng": 139.69, "name": "Tokyo"}),
        ("custom", {"data": {"card": "order", "id": 42}}),
        ("text", {"text": "@bob look", "mentions": ["bob"]}),
    ]
    for kind, body in sent:
        await alice.send(DM, kind=kind, body=body)
    got = [await bob.next_message() for _ in sent]
    assert [(m.kind, m.body) for m in got] == sent
    assert [(m.kind, m.body) for m in await bob.history(DM)] == sent

    with pytest.raises(FlareError) as err:
        await alice.send(DM, kind="image", body={"width": 5})
    assert err.value.code == ErrorCode.INVALID
    with pytest.raises(FlareError) as err:
        await alice.send(DM, kind="hologram", body={"x": 1})
    assert err.value.code == ErrorCode.INVALID
    assert (await bob.pull(DM)).max_seq == len(sent)  # nothing stored for the refused ones
