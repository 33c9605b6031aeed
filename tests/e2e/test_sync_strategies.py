"""Sync strategies (Y1, S4): incremental, full with recent messages, fast (most recent first)."""

from __future__ import annotations

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness


async def test_new_device_restores_recent_conversations_first(harness: Harness) -> None:
    peers = [f"p{i}" for i in range(5)]
    for u in ["me", *peers]:
        await harness.user(u)
    senders = {p: await harness.device(p) for p in peers}
    # Activity in the order p0..p4: p4's conversation is the most recent.
    for i, p in enumerate(peers):
        for k in range(i + 2):
            await senders[p].send(f"d:me:{p}", f"{p}-{k}")

    phone = await harness.device("me", "new-phone")
    restored = await phone.restore(first=2, recent=3)
    assert [c.peer for c in restored] == ["p4", "p3", "p2", "p1", "p0"]
    top = restored[0]
    assert [m.body["text"] for m in top.recent] == ["p4-3", "p4-4", "p4-5"]  # newest 3, ascending
    assert len(restored[1].recent) == 3
    assert restored[2].recent == []  # beyond the fast page: list entries only
    assert all(c.unread == c.max_seq for c in restored)


async def test_full_sync_lists_everything_with_recent_messages(harness: Harness) -> None:
    for u in ("me", "a", "b"):
        await harness.user(u)
    a, b = await harness.device("a"), await harness.device("b")
    await a.send("d:a:me", "from a")
    for k in range(4):
        await b.send("d:b:me", f"b{k}")
    me = await harness.device("me")
    await me.sync(0)  # an incremental pass moves the client's version
    entries = await me.sync(page=1, recent=2, since=0)
    assert sorted(c.conv for c in entries) == ["d:a:me", "d:b:me"]
    by_conv = {c.conv: c for c in entries}
    assert [m.body["text"] for m in by_conv["d:b:me"].recent] == ["b2", "b3"]
    assert [m.body["text"] for m in by_conv["d:a:me"].recent] == ["from a"]
    # Cleared history is respected by recent messages too.
    await me.update_settings("d:b:me", clear_to=4)
    [b_entry] = [c for c in await me.sync(0, recent=5) if c.conv == "d:b:me"]
    assert b_entry.recent == []


async def test_bad_sync_parameters(harness: Harness) -> None:
    await harness.user("me")
    raw = harness.rest("me")
    with pytest.raises(FlareError) as err:
        await raw.request("GET", "/v1/conversations", params={"strategy": "psychic"})
    assert err.value.code == ErrorCode.INVALID
    with pytest.raises(FlareError) as err:
        await raw.request("GET", "/v1/conversations", params={"recent": 51})
    assert err.value.code == ErrorCode.INVALID
    full = await raw.request("GET", "/v1/conversations", params={"strategy": "full", "since": 999, "recent": 1})
    assert full == {"items": [], "version": 0, "more": False}
