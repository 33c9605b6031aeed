"""Presence: online while any device is connected, last seen after the last one left, flaps debounced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness, ServerProcess

# Long enough for a dropped device to reconnect on a busy machine (a flap); the checks that nothing was
# announced wait a little longer than it.
DEBOUNCE_S = 1.5
QUIET_S = DEBOUNCE_S + 0.5


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[Harness]:
    srv = ServerProcess(tmp_path / "presence", env_overrides={"FLARE_PRESENCE_DEBOUNCE_S": str(DEBOUNCE_S)})
    srv.start()
    h = Harness(srv)
    yield h
    await h.close()
    srv.stop()


async def test_presence_follows_devices_with_debounce(fast: Harness) -> None:
    for u in ("alice", "bob"):
        await fast.user(u)
    alice = await fast.device("alice")
    [initial] = await alice.watch_presence(["bob"])
    assert (initial.user, initial.online, initial.last_seen) == ("bob", False, 0)

    bob_phone = await fast.device("bob", "phone")
    change = await alice.next_presence(5)
    assert (change.user, change.online) == ("bob", True)
    bob_laptop = await fast.device("bob", "laptop")  # already online: no event
    await bob_phone.close()  # one device left: still online
    with pytest.raises(TimeoutError):
        await alice.next_presence(QUIET_S)

    bob_laptop.reconnect = False
    bob_laptop.drop_connection()  # flap: gone, then back within the debounce time
    await asyncio.sleep(0.1)
    await bob_laptop.connect()
    with pytest.raises(TimeoutError):
        await alice.next_presence(QUIET_S)

    await bob_laptop.close()  # really gone
    change = await alice.next_presence(DEBOUNCE_S + 10)
    assert (change.user, change.online) == ("bob", False)
    assert change.last_seen > 0
    [state] = await alice.watch_presence(["bob"])
    assert (state.online, state.last_seen) == (False, change.last_seen)

    assert await alice.watch_presence([]) == []  # stop watching: no more events
    await fast.device("bob", "tablet")
    with pytest.raises(TimeoutError):
        await alice.next_presence(0.5)


async def test_presence_subscription_limit(fast: Harness) -> None:
    await fast.user("alice")
    alice = await fast.device("alice")
    with pytest.raises(FlareError) as err:
        await alice.watch_presence([f"u{i}" for i in range(1001)])
    assert err.value.code == ErrorCode.INVALID


async def test_last_seen_is_when_the_last_connection_closed(tmp_path: Path) -> None:
    # A long debounce separates the two times: the announcement comes 3 s after the close.
    debounce_ms = 3000
    srv = ServerProcess(tmp_path / "seen", env_overrides={"FLARE_PRESENCE_DEBOUNCE_S": str(debounce_ms / 1000)})
    srv.start()
    h = Harness(srv)
    try:
        for u in ("alice", "bob"):
            await h.user(u)
        alice = await h.device("alice")
        await alice.watch_presence(["bob"])
        bob = await h.device("bob")
        assert (await alice.next_presence(5)).online
        before = int(time.time() * 1000)
        await bob.close()
        closed = int(time.time() * 1000)
        change = await alice.next_presence(debounce_ms / 1000 + 5)
        announced = int(time.time() * 1000)
        assert (change.user, change.online) == ("bob", False)
        assert announced - closed >= debounce_ms - 500  # the debounce really held the announcement back
        # last_seen is the close (the server notices it a moment after the client's close returns), not the
        # announcement a debounce later.
        assert before <= change.last_seen < closed + debounce_ms // 2, (before, change.last_seen, closed)
        [state] = await alice.watch_presence(["bob"])
        assert state.last_seen == change.last_seen
    finally:
        await h.close()
        srv.stop()
