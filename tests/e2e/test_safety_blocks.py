"""Blocking (U3) against a real server: the blocked user's direct messages are refused and nothing is stored, its
typing and presence stop reaching the blocker, the block list syncs to the blocker's devices."""

from __future__ import annotations

import asyncio

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import BlockList, ServerFrame

from .conftest import Harness

DM = "d:alice:bob"


async def test_a_blocked_users_direct_messages_are_refused_and_nothing_is_stored(harness: Harness) -> None:
    for u in ("alice", "bob"):
        await harness.user(u)
    lists: list[BlockList] = []

    def seen(frame: ServerFrame) -> None:
        if isinstance(frame, BlockList):
            lists.append(frame)

    alice_phone = await harness.device("alice", "phone", on_frame=seen)
    alice_laptop = await harness.device("alice", "laptop")
    bob = await harness.device("bob")
    first = await bob.send(DM, "hello")
    assert first.seq == 1
    assert (await alice_phone.next_message(5)).seq == 1

    blocked = await harness.rest("alice").request("PUT", "/v1/me/blocks/bob")
    assert [i["user_id"] for i in blocked["items"]] == ["bob"]
    assert blocked["version"] > 0
    # Every device of alice gets the new list (the one that made the change too: it came over REST).
    for _ in range(50):
        if lists:
            break
        await asyncio.sleep(0.05)
    assert lists
    assert lists[-1].users == ["bob"]
    assert lists[-1].version == blocked["version"]

    with pytest.raises(FlareError) as err:
        await bob.send(DM, "are you there?")
    assert err.value.code == ErrorCode.FORBIDDEN
    assert err.value.detail == {"reason": "blocked"}
    with pytest.raises(FlareError) as err:  # over REST the same
        await harness.rest("bob").send(DM, "rest-1", {"text": "hi?"})
    assert err.value.code == ErrorCode.FORBIDDEN
    assert err.value.detail == {"reason": "blocked"}
    # Nor does bob edit or react to what is already in the conversation (alice would see it change).
    with pytest.raises(FlareError) as err:
        await bob.edit(DM, 1, "edited after the block", base_version=1)
    assert err.value.detail == {"reason": "blocked"}
    with pytest.raises(FlareError) as err:
        await bob.react(DM, 1, "👎")
    assert err.value.detail == {"reason": "blocked"}
    # The blocker sending to the blocked user is refused too, until it unblocks.
    with pytest.raises(FlareError) as err:
        await alice_laptop.send(DM, "hey")
    assert err.value.detail == {"reason": "blocking"}

    # Nothing was stored: the blocker's history and max seq show only the message before the block.
    page = await alice_laptop.pull(DM)
    assert page.max_seq == 1
    assert [m.seq for m in page.items] == [1]
    with pytest.raises(TimeoutError):
        await alice_phone.next_message(0.3)

    # Idempotent: blocking again changes nothing (same version).
    again = await harness.rest("alice").request("PUT", "/v1/me/blocks/bob")
    assert again["version"] == blocked["version"]
    assert (await harness.rest("alice").request("GET", "/v1/me/blocks"))["items"][0]["user_id"] == "bob"

    unblocked = await harness.rest("alice").request("DELETE", "/v1/me/blocks/bob")
    assert unblocked["items"] == []
    assert unblocked["version"] > blocked["version"]
    ack = await bob.send(DM, "now?")
    assert ack.seq == 2
    assert (await alice_phone.next_message(5)).seq == 2


async def test_block_refusals_change_nothing(harness: Harness) -> None:
    await harness.user("alice")
    rest = harness.rest("alice")
    for path, code in (
        ("/v1/me/blocks/alice", ErrorCode.FORBIDDEN),  # oneself
        ("/v1/me/blocks/nobody", ErrorCode.NOT_FOUND),
        ("/v1/me/blocks/Not%20An%20Id", ErrorCode.INVALID),
    ):
        with pytest.raises(FlareError) as err:
            await rest.request("PUT", path)
        assert err.value.code == code, path
    assert await rest.request("GET", "/v1/me/blocks") == {"items": [], "version": 0}


async def test_typing_and_presence_of_a_blocked_user_stop_reaching_the_blocker(harness: Harness) -> None:
    for u in ("alice", "bob", "carol"):
        await harness.user(u)
    group = await harness.rest("alice").create_group("three", ["bob", "carol"])
    alice = await harness.device("alice")
    carol = await harness.device("carol")
    bob = await harness.device("bob")
    states = await alice.watch_presence(["bob"])
    assert states[0].online  # before the block alice sees bob

    await harness.rest("alice").request("PUT", "/v1/me/blocks/bob")
    # A new subscription shows bob as never seen, while carol (not blocking) sees him online.
    states = await alice.watch_presence(["bob"])
    assert (states[0].online, states[0].last_seen) == (False, 0)
    assert (await carol.watch_presence(["bob"]))[0].online

    await bob.typing(DM)
    await bob.typing(group["conv"])
    # carol gets bob's typing in the group; alice gets none, neither in the group nor in the direct conversation.
    assert (await carol.next_typing(5)).user == "bob"
    with pytest.raises(TimeoutError):
        await alice.next_typing(0.5)

    # bob leaves and comes back after the debounce: carol is told, alice is not.
    await harness.rest("alice").request("DELETE", "/v1/me/blocks/carol")  # unrelated change: nothing for bob
    await bob.close()
    assert not (await carol.next_presence(10)).online
    await harness.device("bob", "second")
    assert (await carol.next_presence(10)).online
    with pytest.raises(TimeoutError):
        await alice.next_presence(0.5)

    # Group messages still flow both ways: a block is between two people.
    ack = await bob.send(group["conv"], "all here") if bob.connected else None
    ack = ack or await carol.send(group["conv"], "all here")
    assert ack.seq > 0
