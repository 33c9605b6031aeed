"""Unread-mention counts per conversation (U4)."""

from __future__ import annotations

from .conftest import Harness


async def test_unread_mention_count(harness: Harness) -> None:
    for u in ("alice", "bob", "carol"):
        await harness.user(u)
    group = await harness.rest("alice").create_group("m", ["bob", "carol"])
    conv = group["conv"]
    alice, bob, carol = [await harness.device(u) for u in ("alice", "bob", "carol")]
    await bob.send(conv, body={"text": "@alice hi", "mentions": ["alice"]})
    await bob.send(conv, body={"text": "@all lunch?", "mentions": ["all"]})
    await bob.send(conv, "no mention")
    [entry] = await alice.sync(0)
    assert (entry.unread, entry.unread_mentions) == (3, 2)
    [entry] = await carol.sync(0)
    assert entry.unread_mentions == 1  # only the @all
    [entry] = await bob.sync(0)
    assert entry.unread_mentions == 0  # his own mentions never count for him
    await alice.read(conv, entry.max_seq)
    [entry] = await alice.sync(0)
    assert (entry.unread, entry.unread_mentions) == (0, 0)
