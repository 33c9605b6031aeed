"""ConversationService's membership changes (src/flare_im/services/conversations.py): every change goes through
the service, which keeps its group cache in step; who may send and read, and member counts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.clock import ManualClock
from tests.unit.world import World, open_world

from flare_im.backends.relational.base import Member
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.conversations import ConversationService


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path / "flare.db") as w:
        await w.users("alice", "bob", "carol")
        yield w


async def refused(code: ErrorCode, call: object) -> FlareError:
    with pytest.raises(FlareError) as info:
        await call  # type: ignore[misc]
    assert info.value.code is code, info.value
    return info.value


async def test_changes_through_the_service_keep_the_cache_in_step(world: World) -> None:
    service = world.conversations
    conv = await world.group("team", "alice", "bob")
    assert sorted(await service.recipients_for_send("alice", conv)) == ["alice", "bob"]  # cached now
    await service.add_members([Member(conv=conv, uid="carol", join_seq=5)])
    assert sorted(await service.recipients_for_send("carol", conv)) == ["alice", "bob", "carol"]
    assert await service.member_count(conv) == 3
    await service.set_role(conv, "carol", "admin", 7)
    carol = {m.uid: m for m in await service.members(conv)}["carol"]
    assert (carol.conv, carol.role, carol.version, carol.join_seq) == (conv, "admin", 7, 5)
    assert (await world.store.get_member(conv, "carol")).role == "admin"  # type: ignore[union-attr]
    await service.set_role(conv, "nobody", "admin", 8)  # not a member: the cache gains nobody
    assert "nobody" not in {m.uid for m in await service.members(conv)}
    await service.remove_member(conv, "bob", 9)
    await service.remove_member(conv, "nobody", 10)  # not a member: nothing to drop from the cache
    await refused(ErrorCode.FORBIDDEN, service.recipients_for_send("bob", conv))
    assert await service.member_count(conv) == 2
    assert (await service.member_counts([conv]))[conv] == 2
    await refused(ErrorCode.FORBIDDEN, service.member_for_read("bob", conv))  # left


async def test_changes_to_a_group_not_cached_only_reach_the_store(world: World) -> None:
    service = world.conversations
    conv = await world.group("team", "alice")
    await service.add_members([Member(conv=conv, uid="bob")])
    await service.set_role(conv, "bob", "admin", 3)
    assert {m.uid: m.role for m in await service.members(conv)} == {"alice": "owner", "bob": "admin"}
    await service.remove_member(conv, "alice", 4)
    assert [m.uid for m in await service.members(conv)] == ["bob"]


async def test_member_count_of_direct_and_missing_conversations(world: World) -> None:
    service = world.conversations
    assert await service.member_count("d:alice:bob") == 2
    assert await service.member_count("g:none") == 0
    with pytest.raises(FlareError) as info:
        await service.member_count("g:bad id")
    assert info.value.code is ErrorCode.INVALID


async def test_who_may_read(world: World) -> None:
    service = world.conversations
    conv = await world.group("team", "alice", "bob")
    assert (await service.member_for_read("bob", conv)).uid == "bob"
    await refused(ErrorCode.FORBIDDEN, service.member_for_read("carol", conv))
    await refused(ErrorCode.NOT_FOUND, service.member_for_read("carol", "g:none"))
    await refused(ErrorCode.FORBIDDEN, service.member_for_read("carol", "d:alice:bob"))
    await refused(ErrorCode.NOT_FOUND, service.member_for_read("alice", "d:alice:nobody"))
    empty = await service.member_for_read("alice", "d:alice:bob")  # nobody wrote yet: readable, empty
    assert (empty.conv, empty.uid, empty.read_seq) == ("d:alice:bob", "alice", 0)


async def test_concurrent_first_sends_create_a_direct_conversation_once(world: World) -> None:
    service = world.conversations
    got = await asyncio.gather(*(service.recipients_for_send(u, "d:alice:bob") for u in ("alice", "bob") * 5))
    assert all(sorted(r) == ["alice", "bob"] for r in got)
    assert sorted(m.uid for m in await world.store.list_members("d:alice:bob")) == ["alice", "bob"]
    await refused(ErrorCode.FORBIDDEN, service.recipients_for_send("carol", "d:alice:bob"))


async def test_a_group_is_read_from_the_cache_until_its_ttl_has_passed(tmp_path: Path) -> None:
    clock = ManualClock()
    async with open_world(tmp_path / "ttl.db") as world:
        await world.users("alice", "bob", "carol")
        service = ConversationService(world.store, world.store, group_cache_ttl_s=5.0, clock=clock)
        conv = await world.group("team", "alice", "bob")
        assert len(await service.members(conv)) == 2
        await world.store.add_members([Member(conv=conv, uid="carol")])  # as another node would
        clock.advance(5.0)  # exactly the ttl: still fresh
        assert len(await service.members(conv)) == 2
        assert (await service.member_counts([conv]))[conv] == 2
        clock.advance(0.1)
        assert (await service.member_counts([conv]))[conv] == 3
        assert len(await service.members(conv)) == 3


async def test_without_a_ttl_the_cache_holds_until_this_process_changes_the_group(world: World) -> None:
    service = world.conversations
    conv = await world.group("team", "alice", "bob")
    assert len(await service.members(conv)) == 2
    await world.store.add_members([Member(conv=conv, uid="carol")])  # behind the service's back
    assert len(await service.members(conv)) == 2
    error = await refused(ErrorCode.NOT_FOUND, service.members("g:none"))
    assert error.message == "no such group"
