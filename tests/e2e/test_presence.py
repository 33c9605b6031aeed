"""Presence: online while any device is connected, last seen after the last one left, flaps debounced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness, ServerProcess


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[Harness]:
    srv = ServerProcess(tmp_path / "presence", env_overrides={"FLARE_PRESENCE_DEBOUNCE_S": "0.4"})
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
        await alice.next_presence(0.8)

    bob_laptop.reconnect = False
    bob_laptop.drop_connection()  # flap: gone, then back within the debounce time
    await asyncio.sleep(0.1)
    await bob_laptop.connect()
    with pytest.raises(TimeoutError):
        await alice.next_presence(0.8)

    await bob_laptop.close()  # really gone
    change = await alice.next_presence(5)
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
