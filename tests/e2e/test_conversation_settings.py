"""Per-user conversation settings: pin, mute, hide, draft, clear history for me (S2)."""

from __future__ import annotations

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness

DM = "d:alice:bob"


async def test_settings_sync_to_the_users_other_devices(harness: Harness) -> None:
    for u in ("alice", "bob", "carol"):
        await harness.user(u)
    phone = await harness.device("alice", "phone")
    laptop = await harness.device("alice", "laptop")
    bob = await harness.device("bob")
    for i in range(4):
        await bob.send(DM, f"m{i}")
    [before] = await laptop.sync(0)
    version = laptop.version

    state = await phone.update_settings(DM, pinned=True, muted=True, draft="on my way")
    assert (state.pinned, state.muted, state.hidden, state.draft) == (True, True, False, "on my way")
    pushed = await laptop.next_settings(5)  # the other device hears about it
    assert (pushed.conv, pushed.pinned, pushed.draft, pushed.version) == (DM, True, "on my way", state.version)
    assert pushed.version > before.version

    [changed] = await laptop.sync(version)  # the change bumps the list version
    assert (changed.pinned, changed.muted, changed.draft, changed.unread) == (True, True, "on my way", 4)
    state = await phone.update_settings(DM, draft="", pinned=False)  # only given fields change
    assert (state.pinned, state.muted, state.draft) == (False, True, "")
    # Bob's view is his own.
    [bob_view] = await bob.sync(0)
    assert (bob_view.pinned, bob_view.muted, bob_view.draft) == (False, False, "")


async def test_clear_history_for_me(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice = await harness.device("alice")
    bob = await harness.device("bob")
    acks = [await bob.send(DM, f"m{i}") for i in range(5)]
    state = await alice.update_settings(DM, clear_to=acks[2].seq)
    assert state.cleared_seq == acks[2].seq
    page = await alice.pull(DM, after=0)
    assert [m.seq for m in page.items] == [acks[3].seq, acks[4].seq]
    assert page.min_seq == acks[2].seq + 1
    [summary] = await alice.sync(0)
    assert (summary.cleared_seq, summary.unread) == (acks[2].seq, 2)  # clearing also reads what it cleared
    await alice.update_settings(DM, clear_to=1)  # never moves back
    assert [m.seq for m in (await alice.pull(DM, after=0)).items] == [acks[3].seq, acks[4].seq]
    assert len((await bob.pull(DM, after=0)).items) == 5  # only for alice
    with pytest.raises(FlareError) as err:
        await alice.update_settings(DM, clear_to=99)
    assert err.value.code == ErrorCode.OUT_OF_RANGE


async def test_settings_errors_and_rest(harness: Harness) -> None:
    for u in ("alice", "bob", "carol"):
        await harness.user(u)
    bob = await harness.device("bob")
    await bob.send(DM, "hi")
    carol = await harness.device("carol")
    with pytest.raises(FlareError) as err:
        await carol.update_settings(DM, pinned=True)
    assert err.value.code == ErrorCode.FORBIDDEN
    with pytest.raises(FlareError) as err:
        await bob.update_settings(DM, draft="x" * 5000)
    assert err.value.code == ErrorCode.INVALID
    out = await harness.rest("alice").request("PATCH", f"/v1/conversations/{DM}/settings", json={"hidden": True})
    assert (out["conv"], out["hidden"]) == (DM, True)
    pushed = None
    alice = await harness.device("alice")
    await harness.rest("alice").request("PATCH", f"/v1/conversations/{DM}/settings", json={"hidden": False})
    pushed = await alice.next_settings(5)  # REST changes reach every device
    assert pushed.hidden is False
