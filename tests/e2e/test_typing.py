"""Typing notices: forwarded to the other members' online devices, rate-limited, members only."""

from __future__ import annotations

import asyncio

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness

DM = "d:alice:bob"


async def test_typing_reaches_the_peer_devices_once_per_interval(harness: Harness) -> None:
    for u in ("alice", "bob", "carol"):
        await harness.user(u)
    alice = await harness.device("alice", "phone")
    bob_phone = await harness.device("bob", "phone")
    bob_laptop = await harness.device("bob", "laptop")

    await alice.typing(DM)
    for device in (bob_phone, bob_laptop):
        notice = await device.next_typing(5)
        assert (notice.conv, notice.user, notice.device) == (DM, "alice", "phone")
    with pytest.raises(TimeoutError):  # not echoed to the typing user
        await alice.next_typing(0.3)

    await alice.typing(DM)  # within the interval (2 s by default): accepted, not forwarded
    with pytest.raises(TimeoutError):
        await bob_phone.next_typing(0.5)

    carol = await harness.device("carol")
    with pytest.raises(FlareError) as err:
        await carol.typing(DM)
    assert err.value.code == ErrorCode.FORBIDDEN
    # Nothing was stored: the conversation has no message.
    assert (await alice.pull(DM)).max_seq == 0


async def test_typing_in_a_group(harness: Harness) -> None:
    names = ["g1", "g2", "g3"]
    for n in names:
        await harness.user(n)
    group = await harness.rest("g1").create_group("typing", names[1:])
    devices = {n: await harness.device(n) for n in names}
    await devices["g2"].typing(group["conv"])
    got = await asyncio.gather(devices["g1"].next_typing(5), devices["g3"].next_typing(5))
    assert {(n.conv, n.user) for n in got} == {(group["conv"], "g2")}
