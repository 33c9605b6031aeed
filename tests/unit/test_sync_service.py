"""Sync (src/flare_im/services/sync.py) in one process: the conversation list by version and strategy, pages
of history and their bounds, read and delivered receipts, readers, per-user settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.unit.world import World, open_world

from flare_im.backends.relational.base import Member, SettingsChange
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.sync import FAST, FULL, MAX_DRAFT

DM = "d:alice:bob"


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


async def test_the_list_describes_each_conversation(world: World) -> None:
    await world.send("bob", DM, "one")
    last = await world.send("bob", DM, "two", mentions=["alice"])
    conv = await world.group("team", "carol", "alice", admins=("alice",))
    await world.send("carol", conv, "hello team")
    page = await world.sync.conversations("alice", since=0, limit=10)
    assert not page.more
    direct, group = sorted(page.items, key=lambda s: s.conv)
    assert (direct.kind, direct.peer, direct.name, direct.avatar, direct.role) == (
        "direct",
        "bob",
        "Bob",
        "bob.png",
        "",
    )
    assert (direct.max_seq, direct.read_seq, direct.unread, direct.unread_mentions) == (2, 0, 2, 1)
    assert (direct.member_count, direct.last) == (2, last)
    assert (group.kind, group.peer, group.name, group.avatar, group.role) == ("group", "", "Team", "team.png", "admin")
    assert (group.max_seq, group.unread, group.member_count) == (1, 1, 2)
    assert group.last is not None
    assert group.last.body == {"text": "hello team"}
    assert direct.recent == []  # not asked for


async def test_incremental_pages_by_version_and_full_starts_over(world: World) -> None:
    for peer in ("bob", "carol"):
        await world.send(peer, f"d:alice:{peer}", "hi")
    first = await world.sync.conversations("alice", since=0, limit=1)
    assert first.more
    assert [s.conv for s in first.items] == ["d:alice:bob"]
    assert first.version == first.items[0].version
    second = await world.sync.conversations("alice", since=first.version, limit=1)
    assert [s.conv for s in second.items] == ["d:alice:carol"]
    assert not second.more
    assert second.version > first.version
    empty = await world.sync.conversations("alice", since=second.version, limit=5)
    assert (empty.items, empty.version, empty.more) == ([], second.version, False)
    full = await world.sync.conversations("alice", since=second.version, limit=5, strategy=FULL)
    assert len(full.items) == 2
    await world.send("bob", "d:alice:bob", "again")
    changed = await world.sync.conversations("alice", since=second.version, limit=5)
    assert [s.conv for s in changed.items] == ["d:alice:bob"]
    assert changed.items[0].unread == 2


async def test_fast_lists_the_most_recent_first_with_their_newest_messages(world: World) -> None:
    await world.send("bob", "d:alice:bob", "old 1")
    await world.send("bob", "d:alice:bob", "old 2")
    await world.send("carol", "d:alice:carol", "new")
    page = await world.sync.conversations("alice", since=0, limit=1, strategy=FAST, recent=1)
    assert [s.conv for s in page.items] == ["d:alice:carol"]
    assert (page.version, page.more) == (0, True)  # the client follows with an incremental pass from 0
    assert [m.body["text"] for m in page.items[0].recent] == ["new"]
    both = await world.sync.conversations("alice", since=0, limit=5, strategy=FAST, recent=5)
    assert [s.conv for s in both.items] == ["d:alice:carol", "d:alice:bob"]
    assert [m.body["text"] for m in both.items[1].recent] == ["old 1", "old 2"]


async def test_a_member_who_left_sees_the_list_entry_frozen(world: World) -> None:
    conv = await world.group("team", "carol", "alice")
    await world.send("carol", conv, "before", mentions=["alice"])  # unread when alice leaves
    await world.clock.stamped(lambda v: world.store.set_left(conv, "alice", v))
    await world.send("carol", conv, "after", mentions=["alice"])
    [entry] = (await world.sync.conversations("alice", since=0, limit=5)).items
    assert entry.left
    assert (entry.unread, entry.unread_mentions, entry.last, entry.recent) == (0, 0, None, [])
    [again] = (await world.sync.conversations("alice", since=0, limit=5, recent=5)).items
    assert again.recent == []


async def test_deleted_for_me_messages_are_tombstones_in_pages_and_lists(world: World) -> None:
    one = await world.send("bob", DM, "one")
    two = await world.send("bob", DM, "two")
    before = (await world.sync.conversations("alice", since=0, limit=5)).version
    await world.operations.hide("alice", "phone", DM, [two.seq])
    [entry] = (await world.sync.conversations("alice", since=0, limit=5, recent=5)).items
    assert entry.hidden_seqs == [two.seq]
    assert entry.last is not None
    assert (entry.last.state, entry.last.body) == ("hidden", {})
    assert [m.state for m in entry.recent] == ["", "hidden"]
    [changed] = (await world.sync.conversations("alice", since=before, limit=5)).items
    assert changed.hidden_seqs == [two.seq]
    page = await world.sync.messages("alice", DM, after=0, before=None, limit=10)
    assert [(m.seq, m.state, m.body) for m in page.items] == [(one.seq, "", one.body), (two.seq, "hidden", {})]
    [bobs] = (await world.sync.conversations("bob", since=0, limit=5)).items
    assert bobs.hidden_seqs == []  # only for alice
    assert (await world.sync.messages("bob", DM, after=0, before=None, limit=10)).items[1].body == two.body


async def test_pages_of_history_forwards_and_backwards(world: World) -> None:
    sent = [await world.send("bob", DM, f"m{i}") for i in range(1, 8)]
    assert [m.seq for m in sent] == list(range(1, 8))
    newest = await world.sync.messages("alice", DM, after=None, before=None, limit=3)
    assert ([m.seq for m in newest.items], newest.more, newest.max_seq, newest.min_seq) == ([5, 6, 7], True, 7, 1)
    older = await world.sync.messages("alice", DM, after=None, before=5, limit=3)
    assert ([m.seq for m in older.items], older.more) == ([2, 3, 4], True)
    oldest = await world.sync.messages("alice", DM, after=None, before=2, limit=3)
    assert ([m.seq for m in oldest.items], oldest.more) == ([1], False)
    exact = await world.sync.messages("alice", DM, after=None, before=4, limit=3)
    assert ([m.seq for m in exact.items], exact.more) == ([1, 2, 3], False)
    forward = await world.sync.messages("alice", DM, after=2, before=None, limit=3)
    assert ([m.seq for m in forward.items], forward.more) == ([3, 4, 5], True)
    end = await world.sync.messages("alice", DM, after=4, before=None, limit=3)
    assert ([m.seq for m in end.items], end.more) == ([5, 6, 7], False)
    between = await world.sync.messages("alice", DM, after=2, before=6, limit=3)
    assert ([m.seq for m in between.items], between.more) == ([3, 4, 5], False)
    at_top = await world.sync.messages("alice", DM, after=7, before=None, limit=3)
    assert (at_top.items, at_top.more) == ([], False)
    top = await world.sync.messages("alice", DM, after=None, before=8, limit=10)
    assert len(top.items) == 7


async def test_page_bounds_are_checked(world: World) -> None:
    for i in range(3):
        await world.send("bob", DM, f"m{i}")
    await refused(ErrorCode.OUT_OF_RANGE, world.sync.messages("alice", DM, after=4, before=None, limit=5))
    await refused(ErrorCode.OUT_OF_RANGE, world.sync.messages("alice", DM, after=None, before=5, limit=5))
    await refused(ErrorCode.INVALID, world.sync.messages("alice", DM, after=2, before=2, limit=5))
    await refused(ErrorCode.FORBIDDEN, world.sync.messages("alice", "d:bob:carol", after=0, before=None, limit=5))


async def test_a_cleared_history_is_gone_below_the_floor(world: World) -> None:
    for i in range(5):
        await world.send("bob", DM, f"m{i}")
    settings = await world.sync.update_settings("alice", "phone", DM, SettingsChange(cleared_seq=3))
    assert settings.cleared_seq == 3
    page = await world.sync.messages("alice", DM, after=None, before=None, limit=10)
    assert ([m.seq for m in page.items], page.min_seq, page.more) == ([4, 5], 4, False)
    limited = await world.sync.messages("alice", DM, after=None, before=None, limit=2)
    assert limited.more is False  # nothing readable below 4
    after_floor = await world.sync.messages("alice", DM, after=0, before=None, limit=10)
    assert [m.seq for m in after_floor.items] == [4, 5]
    at_floor = await world.sync.messages("alice", DM, after=3, before=None, limit=10)
    assert [m.seq for m in at_floor.items] == [4, 5]
    for after, before in ((2, None), (None, 3), (1, None), (None, 2)):
        error = await refused(ErrorCode.GONE, world.sync.messages("alice", DM, after=after, before=before, limit=5))
        assert error.detail == {"min_seq": 4, "max_seq": 5}
        assert error.message.endswith("resync from 4")
    bobs = await world.sync.messages("bob", DM, after=1, before=None, limit=10)
    assert [m.seq for m in bobs.items] == [2, 3, 4, 5]  # only alice cleared it
    [entry] = (await world.sync.conversations("alice", since=0, limit=5, recent=10)).items
    assert [m.seq for m in entry.recent] == [4, 5]
    assert entry.cleared_seq == 3
    assert entry.read_seq == 3


async def test_read_moves_forward_and_tells_the_other_devices_and_the_peer(world: World) -> None:
    for i in range(3):
        await world.send("bob", DM, f"m{i}")
    world.fanout.clear()
    assert await world.sync.mark_read("alice", "phone", DM, 2)
    [(uids, receipt, skip)] = world.fanout.of("receipt")
    assert (uids, skip) == (["alice", "bob"], ("alice", "phone"))
    assert (receipt.conv, receipt.user, receipt.kind, receipt.seq, receipt.device) == (DM, "alice", "read", 2, "phone")
    assert not await world.sync.mark_read("alice", "phone", DM, 1)  # never back; nobody told
    assert not await world.sync.mark_read("alice", "phone", DM, 2)
    assert len(world.fanout.of("receipt")) == 1
    error = await refused(ErrorCode.OUT_OF_RANGE, world.sync.mark_read("alice", "phone", DM, 4))
    assert error.message == "seq 4 is beyond the conversation's max seq 3"
    assert await world.sync.mark_read("alice", "", DM, 3)
    assert world.fanout.of("receipt")[-1][2] is None
    [entry] = (await world.sync.conversations("alice", since=0, limit=5)).items
    assert (entry.read_seq, entry.unread) == (3, 0)


async def test_in_a_group_a_read_is_told_to_the_readers_devices_only(world: World) -> None:
    conv = await world.group("team", "carol", "alice", "bob")
    await world.send("carol", conv, "hi")
    world.fanout.clear()
    assert await world.sync.mark_read("alice", "phone", conv, 1)
    [(uids, _, _)] = world.fanout.of("receipt")
    assert uids == ["alice"]
    assert await world.sync.mark_delivered("alice", "phone", conv, 1)
    assert len(world.fanout.of("receipt")) == 1  # a group's delivered receipts go to nobody


async def test_delivered_is_told_to_the_peer_only(world: World) -> None:
    await world.send("bob", DM, "m")
    await world.send("bob", DM, "m2")
    world.fanout.clear()
    assert await world.sync.mark_delivered("alice", "phone", DM, 1)
    [(uids, receipt, skip)] = world.fanout.of("receipt")
    assert (uids, receipt.kind, receipt.seq, skip) == (["bob"], "delivered", 1, ("alice", "phone"))
    assert not await world.sync.mark_delivered("alice", "phone", DM, 1)
    assert len(world.fanout.of("receipt")) == 1
    error = await refused(ErrorCode.OUT_OF_RANGE, world.sync.mark_delivered("alice", "phone", DM, 3))
    assert error.message == "seq 3 is beyond the conversation's max seq 2"
    assert await world.sync.mark_delivered("alice", "", DM, 2)
    assert world.fanout.of("receipt")[-1][2] is None


async def test_readers_of_a_group_message(world: World) -> None:
    conv = await world.group("team", "carol", "alice", "bob")
    first = await world.send("carol", conv, "one")
    await world.send("carol", conv, "two")
    await world.sync.mark_read("alice", "", conv, 2)
    await world.sync.mark_read("bob", "", conv, 1)
    state = await world.sync.readers("alice", conv, first.seq)
    assert (state.conv, state.seq, sorted(state.read), state.unread) == (conv, 1, ["alice", "bob"], [])
    state = await world.sync.readers("carol", conv, 2)
    assert (state.read, state.unread) == (["alice"], ["bob"])  # the sender is neither
    await world.users("dave")
    await world.store.add_members([Member(conv=conv, uid="dave", join_seq=2)])
    state = await world.sync.readers("carol", conv, 2)
    assert "dave" not in state.read + state.unread  # joined after it
    for seq in (0, 3):
        error = await refused(ErrorCode.OUT_OF_RANGE, world.sync.readers("alice", conv, seq))
        assert error.message == f"seq {seq} is not a message this user can read (1..2)"
    await refused(ErrorCode.OUT_OF_RANGE, world.sync.readers("dave", conv, 2))  # not readable to dave


async def test_settings_change_bump_the_list_and_reach_the_other_devices(world: World) -> None:
    await world.send("bob", DM, "m")
    before = (await world.sync.conversations("alice", since=0, limit=5)).version
    world.fanout.clear()
    change = SettingsChange(pinned=True, muted=True, hidden=True, draft="half a thought")
    state = await world.sync.update_settings("alice", "phone", DM, change)
    assert (state.conv, state.pinned, state.muted, state.hidden, state.draft) == (
        DM,
        True,
        True,
        True,
        "half a thought",
    )
    assert state.version > before
    [(uids, pushed, skip)] = world.fanout.of("settings")
    assert (uids, pushed, skip) == (["alice"], state, ("alice", "phone"))
    [entry] = (await world.sync.conversations("alice", since=before, limit=5)).items
    assert (entry.pinned, entry.muted, entry.hidden, entry.draft, entry.version) == (
        True,
        True,
        True,
        "half a thought",
        state.version,
    )
    await world.sync.update_settings("alice", "", DM, SettingsChange(draft=""))
    assert world.fanout.of("settings")[-1][2] is None
    await world.sync.update_settings("alice", "", DM, SettingsChange(draft="x" * MAX_DRAFT))
    await refused(
        ErrorCode.INVALID, world.sync.update_settings("alice", "", DM, SettingsChange(draft="x" * (MAX_DRAFT + 1)))
    )
    await refused(ErrorCode.OUT_OF_RANGE, world.sync.update_settings("alice", "", DM, SettingsChange(cleared_seq=2)))
    await world.sync.update_settings("alice", "", DM, SettingsChange(cleared_seq=1))
    await refused(
        ErrorCode.OUT_OF_RANGE, world.sync.update_settings("alice", "", "d:alice:carol", SettingsChange(pinned=True))
    )


async def test_readers_look_at_the_sender_of_that_very_message(world: World) -> None:
    conv = await world.group("team", "carol", "alice", "bob")
    for sender in ("carol", "alice", "bob"):  # seqs 1, 2, 3 from three senders
        await world.send(sender, conv, f"from {sender}")
    # A sender has read up to its own message: carol 1, alice 2, bob 3.
    state = await world.sync.readers("carol", conv, 2)
    assert (state.read, state.unread) == (["bob"], ["carol"])  # alice sent it: neither
    state = await world.sync.readers("carol", conv, 3)
    assert (state.read, sorted(state.unread)) == ([], ["alice", "carol"])  # bob sent it


async def test_a_stuck_write_holds_the_list_version_back_but_never_stalls_paging(world: World) -> None:
    for peer in ("bob", "carol"):
        await world.send(peer, f"d:alice:{peer}", "hi")
    stuck = world.clock.begin()  # a write that has not finished: entries after it may still be missing
    try:
        await world.send("bob", "d:alice:bob", "after the stuck write")
        first = await world.sync.conversations("alice", since=0, limit=1)
        assert [s.conv for s in first.items] == ["d:alice:carol"]
        assert first.version == first.items[0].version  # below the stuck write: as far as the page goes
        second = await world.sync.conversations("alice", since=first.version, limit=1)
        [entry] = second.items
        assert entry.conv == "d:alice:bob"
        assert entry.version > stuck
        assert second.version == stuck - 1  # held back to what is certainly complete
        third = await world.sync.conversations("alice", since=second.version, limit=1)
        assert third.items == [entry]
        assert third.version == stuck - 1
        # A full page whose every entry is past the stuck write still moves on: it must not page forever.
        await world.send("carol", "d:alice:carol", "also after")
        fourth = await world.sync.conversations("alice", since=second.version, limit=1)
        assert fourth.more
        assert fourth.version == fourth.items[0].version > second.version
    finally:
        world.clock.end(stuck)


async def test_entries_of_a_conversation_left_no_longer_change(world: World) -> None:
    conv = await world.group("team", "carol", "alice")
    await world.send("carol", conv, "before")
    await world.clock.stamped(lambda v: world.store.set_left(conv, "alice", v))
    left = await world.sync.conversations("alice", since=0, limit=5)
    await world.send("carol", conv, "after alice left")
    assert (await world.sync.conversations("alice", since=left.version, limit=5)).items == []


async def test_list_entries_say_where_the_user_joined_and_what_it_can_see(world: World) -> None:
    conv = await world.group("team", "carol", "alice")
    for i in range(3):
        await world.send("carol", conv, f"m{i}")
    await world.users("dave")
    await world.conversations.add_members([Member(conv=conv, uid="dave", join_seq=3)])
    [entry] = (await world.sync.conversations("dave", since=0, limit=5, recent=5)).items
    assert (entry.join_seq, entry.max_seq, entry.unread, entry.last, entry.recent) == (3, 3, 0, None, [])
    await world.sync.update_settings("alice", "", conv, SettingsChange(cleared_seq=3))  # up to the last one
    [entry] = (await world.sync.conversations("alice", since=0, limit=5, recent=5)).items
    assert (entry.last, entry.recent, entry.unread) == (None, [], 0)


async def test_recent_gives_the_newest_messages(world: World) -> None:
    for i in range(4):
        await world.send("bob", DM, f"m{i}")
    [entry] = (await world.sync.conversations("alice", since=0, limit=5, recent=2)).items
    assert [m.body["text"] for m in entry.recent] == ["m2", "m3"]


async def test_hidden_seqs_are_those_hidden_since_the_version_asked(world: World) -> None:
    for i in range(4):
        await world.send("bob", DM, f"m{i}")
    await world.operations.hide("alice", "", DM, [2])
    since = (await world.sync.conversations("alice", since=0, limit=5)).version
    [entry] = (await world.sync.conversations("alice", since=0, limit=5)).items
    assert entry.hidden_seqs == [2]
    await world.operations.hide("alice", "", DM, [3])
    [entry] = (await world.sync.conversations("alice", since=since, limit=5)).items
    assert entry.hidden_seqs == [3]  # 2 was hidden before ``since``: the client has it
    await world.sync.update_settings("alice", "", DM, SettingsChange(cleared_seq=3))
    [entry] = (await world.sync.conversations("alice", since=0, limit=5)).items
    assert entry.hidden_seqs == []  # both are below the cleared history now


async def test_a_hidden_message_is_a_bare_tombstone(world: World) -> None:
    target = await world.send("bob", DM, "v1")
    await world.operations.apply("bob", DM, "edit", target.seq, "e", body={"text": "v2"}, base_version=1)
    await world.operations.apply("alice", DM, "react", target.seq, "r", emoji="x")
    await world.operations.hide("alice", "", DM, [target.seq])
    page = await world.sync.messages("alice", DM, after=0, before=None, limit=5)
    tomb = page.items[0]
    assert (tomb.state, tomb.body, tomb.reactions, tomb.version, tomb.edited_at) == ("hidden", {}, {}, 1, 0)
    assert (tomb.seq, tomb.msg_id, tomb.sender) == (target.seq, target.msg_id, "bob")


async def test_the_peer_is_the_other_user_whichever_side_asks(world: World) -> None:
    await world.send("alice", DM, "hi")
    [entry] = (await world.sync.conversations("bob", since=0, limit=5)).items
    assert (entry.peer, entry.name) == ("alice", "Alice")
    world.fanout.clear()
    await world.sync.mark_read("bob", "", DM, 1)
    assert world.fanout.of("receipt")[0][0] == ["bob", "alice"]


async def test_a_page_names_its_conversation_and_whether_more_is_there(world: World) -> None:
    for i in range(6):
        await world.send("bob", DM, f"m{i}")
    page = await world.sync.messages("alice", DM, after=1, before=6, limit=3)
    assert (page.conv, [m.seq for m in page.items], page.more) == (DM, [2, 3, 4], True)
