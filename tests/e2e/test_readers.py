"""Group read receipts (U7): who has read a message, from each member's read seq, for any member."""

from __future__ import annotations

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness


async def test_who_has_read_a_group_message(harness: Harness) -> None:
    names = ["r1", "r2", "r3", "r4"]
    for n in [*names, "late", "outsider"]:
        await harness.user(n)
    group = await harness.rest("r1").create_group("reads", names[1:], group_id="reads")
    conv = group["conv"]
    c = {n: await harness.device(n) for n in names}
    ack = await c["r1"].send(conv, "did you read this?")
    await c["r2"].read(conv, ack.seq)
    await c["r3"].read(conv, ack.seq)

    state = await c["r4"].readers(conv, ack.seq)  # any member may ask
    assert (sorted(state.read), state.unread) == (["r2", "r3"], ["r4"])  # the sender is not listed

    await harness.rest("r1").add_members("reads", ["late"])  # joined after the message: not listed
    later = await c["r1"].send(conv, "and this one?")
    state = await c["r1"].readers(conv, ack.seq)
    assert "late" not in state.read + state.unread
    await c["r4"].read(conv, later.seq)  # reading a later message counts for earlier ones
    state = await c["r1"].readers(conv, ack.seq)
    assert (sorted(state.read), state.unread) == (["r2", "r3", "r4"], [])

    rest = await harness.rest("r2").request("GET", f"/v1/conversations/{conv}/messages/{ack.seq}/readers")
    assert (rest["read_count"], rest["unread_count"]) == (3, 0)

    outsider = await harness.device("outsider")
    with pytest.raises(FlareError) as err:
        await outsider.readers(conv, ack.seq)
    assert err.value.code == ErrorCode.FORBIDDEN
    with pytest.raises(FlareError) as err:
        await c["r2"].readers(conv, 999)
    assert err.value.code == ErrorCode.OUT_OF_RANGE


async def test_direct_conversation_read_state(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice = await harness.device("alice")
    bob = await harness.device("bob")
    ack = await alice.send("d:alice:bob", "hi")
    assert (await alice.readers("d:alice:bob", ack.seq)).unread == ["bob"]
    await bob.read("d:alice:bob", ack.seq)
    assert (await alice.readers("d:alice:bob", ack.seq)).read == ["bob"]
