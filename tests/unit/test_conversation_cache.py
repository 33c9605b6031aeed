"""The bounds of the send path's in-memory caches (services/conversations.py, backends/sequencer/memory.py)
on the embedded store: with tiny bounds, many conversations cycle through the caches, every dropped entry is
read again from the store as on a cold start, and the results are those of unbounded caches."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.world import World, open_world

from flare_im.backends.relational.base import Member
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.conversations import ConversationService, direct_conv

BOUND = 2


def sizes(world: World) -> tuple[int, int, int]:
    """Members in the cached group lists, direct conversations, sequencer counters."""
    conversations = world.conversations
    members = sum(len(g.members) for g in conversations._groups.values())
    assert members == conversations._group_members
    return members, len(conversations._direct_known), len(world.sequencer._counters)


async def refused(world: World, sender: str, conv: str, code: ErrorCode) -> None:
    with pytest.raises(FlareError) as info:
        await world.send(sender, conv, "refused")
    assert info.value.code is code, info.value


async def test_direct_conversations_cycle_through_tiny_caches(tmp_path: Path) -> None:
    caches = {"max_counters": BOUND, "max_direct": BOUND, "max_group_members": BOUND}
    async with open_world(tmp_path / "flare.db", caches=caches) as world:
        users = [f"u{i}" for i in range(8)]
        await world.users(*users)
        convs = [(users[i], users[i + 1], direct_conv(users[i], users[i + 1])) for i in range(len(users) - 1)]
        for round_ in range(4):
            for a, b, conv in convs:
                first = await world.send(a, conv, f"{round_}a")
                second = await world.send(b, conv, f"{round_}b")
                assert (first.seq, second.seq) == (2 * round_ + 1, 2 * round_ + 2)
                assert max(sizes(world)[1:]) <= BOUND
            await refused(world, "u0", convs[-1][2], ErrorCode.FORBIDDEN)  # not one of its two users
        for _, _, conv in convs:
            stored = await world.log.get(conv, range(1, 10))
            assert [m.seq for m in stored] == list(range(1, 9))


async def test_group_membership_is_right_after_its_list_was_dropped(tmp_path: Path) -> None:
    caches = {"max_counters": BOUND, "max_group_members": 2 * BOUND}  # two lists of two members
    async with open_world(tmp_path / "flare.db", caches=caches) as world:
        await world.users("alice", "bob", "carol")
        groups = [await world.group(f"team{i}", "alice", "bob") for i in range(6)]
        for conv in groups:
            await world.send("alice", conv, "hi")
            await world.send("bob", conv, "hi")
            await refused(world, "carol", conv, ErrorCode.FORBIDDEN)
            assert sizes(world)[0] <= 2 * BOUND
        first = groups[0]
        assert first not in world.conversations._groups  # dropped: the changes below go to the store only
        version = world.clock.begin()
        await world.conversations.remove_member(first, "bob", version)
        world.clock.end(version)
        await world.conversations.add_members([Member(conv=first, uid="carol")])
        for conv in groups[1:]:
            await world.send("alice", conv, "push it out again")
        await refused(world, "bob", first, ErrorCode.FORBIDDEN)
        message = await world.send("carol", first, "joined")
        assert message.seq == 3
        assert sorted(m.uid for m in await world.conversations.members(first)) == ["alice", "carol"]
        assert world.fanout.of("msg")[-1][0] == ["alice", "carol"]  # bob no longer receives it
        assert sizes(world)[0] <= 2 * BOUND
        assert len(world.sequencer._counters) <= BOUND
        await refused(world, "alice", "g:nope", ErrorCode.NOT_FOUND)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_group_members"):
        ConversationService(None, None, max_group_members=0)  # type: ignore[arg-type]


async def test_a_group_larger_than_the_bound_is_kept_alone(tmp_path: Path) -> None:
    async with open_world(tmp_path / "flare.db", caches={"max_group_members": 3}) as world:
        await world.users("alice", "bob", "carol", "dave")
        small = await world.group("small", "alice", "bob")
        big = await world.group("big", "alice", "bob", "carol", "dave")
        await world.send("bob", small, "hi")
        await world.send("dave", big, "hi")
        assert list(world.conversations._groups) == [big]
        await world.conversations.add_members([Member(conv=small, uid="carol")])
        await world.send("carol", small, "joined")  # re-read, with carol; the big one goes
        assert list(world.conversations._groups) == [small]
        assert sizes(world)[0] == 3
