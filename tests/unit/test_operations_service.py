"""Message operations (src/flare_im/services/operations.py) in one process: recall and delete (window and
moderators), edits (versions, conflicts, quotes kept), reactions, delete for me, forward, revisions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.world import World, open_world

from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services import operations
from flare_im.services.operations import MAX_REACTION_KINDS

DM = "d:alice:bob"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path / "flare.db") as w:
        await w.users("alice", "bob", "carol", "dave")
        yield w


async def refused(code: ErrorCode, call: Any) -> FlareError:
    with pytest.raises(FlareError) as info:
        await call
    assert info.value.code is code, info.value
    return info.value


async def test_recall_is_an_event_that_changes_its_target(world: World) -> None:
    target = await world.send("alice", DM, "oops")
    world.fanout.clear()
    result = await world.operations.apply("alice", DM, "recall", target.seq, "op-1", device="phone")
    assert (result.target, result.version, result.duplicate) == (target.seq, 2, False)
    event = result.event
    assert (event.kind, event.seq, event.sender) == ("recall", 2, "alice")
    assert event.body == {"target": target.seq, "target_id": target.msg_id, "version": 2}
    [(uids, pushed, skip)] = world.fanout.of("msg")
    assert (sorted(uids), pushed, skip) == (["alice", "bob"], event, ("alice", "phone"))
    [stored] = await world.log.get(DM, [target.seq])
    assert (stored.state, stored.version) == ("recalled", 2)
    again = await world.operations.apply("alice", DM, "recall", target.seq, "op-1")
    assert (again.event, again.target, again.version, again.duplicate) == (event, target.seq, 2, True)
    await refused(ErrorCode.GONE, world.operations.apply("alice", DM, "delete", target.seq, "op-2"))


async def test_delete_for_everyone(world: World) -> None:
    target = await world.send("alice", DM, "oops")
    result = await world.operations.apply("alice", DM, "delete", target.seq, "op-1")
    assert result.event.kind == "delete"
    [stored] = await world.log.get(DM, [target.seq])
    assert stored.state == "deleted"


async def test_only_the_sender_recalls_in_a_direct_conversation(world: World) -> None:
    target = await world.send("alice", DM, "mine")
    error = await refused(ErrorCode.FORBIDDEN, world.operations.apply("bob", DM, "recall", target.seq, "op"))
    assert "only the sender" in error.message
    await refused(ErrorCode.FORBIDDEN, world.operations.apply("bob", DM, "delete", target.seq, "op2"))


async def test_past_the_window_only_group_moderators_recall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every message is a minute old when it is recalled, past the 1 s window whatever the machine's speed.
    monkeypatch.setattr(operations, "now_ms", lambda: now_ms() + 60_000)
    async with open_world(tmp_path / "w.db", recall_window_s=1) as world:
        await world.users("alice", "bob", "carol", "dave")
        conv = await world.group("team", "alice", "bob", "carol", admins=("carol",))
        target = await world.send("bob", conv, "old")
        error = await refused(ErrorCode.FORBIDDEN, world.operations.apply("bob", conv, "recall", target.seq, "o1"))
        assert "window" in error.message
        await refused(ErrorCode.FORBIDDEN, world.operations.apply("dave", conv, "recall", target.seq, "o2"))
        await world.operations.apply("carol", conv, "recall", target.seq, "o3")  # an admin
        other = await world.send("carol", conv, "by the admin")
        await world.operations.apply("alice", conv, "delete", other.seq, "o4")  # the owner
        dm = await world.send("alice", DM, "direct")
        await refused(ErrorCode.FORBIDDEN, world.operations.apply("alice", DM, "recall", dm.seq, "o5"))


async def test_within_the_window_a_member_recalls_only_its_own(world: World) -> None:
    conv = await world.group("team", "alice", "bob", "carol")
    target = await world.send("alice", conv, "the owner's")
    await refused(ErrorCode.FORBIDDEN, world.operations.apply("bob", conv, "recall", target.seq, "o1"))
    mine = await world.send("bob", conv, "bob's")
    await world.operations.apply("bob", conv, "recall", mine.seq, "o2")
    await world.operations.apply("alice", conv, "recall", (await world.send("carol", conv, "c")).seq, "o3")


async def test_an_edit_replaces_the_body_at_the_next_version(world: World) -> None:
    quoted = await world.send("bob", DM, "quoted")
    target = await world.send("alice", DM, "draft", reply_to={"seq": quoted.seq})
    result = await world.operations.apply(
        "alice", DM, "edit", target.seq, "e1", body={"text": "final"}, base_version=1, device="phone"
    )
    assert result.version == 2
    assert result.event.body == {
        "target": target.seq,
        "target_id": target.msg_id,
        "version": 2,
        "body": {"text": "final", "reply_to": target.body["reply_to"]},
    }
    [stored] = await world.log.get(DM, [target.seq])
    assert (stored.body["text"], stored.version, stored.edited_at) == ("final", 2, result.event.ts)
    assert stored.body["reply_to"] == target.body["reply_to"]  # the quote is the server's: kept
    current, revisions = await world.operations.revisions("bob", DM, target.seq)
    assert current == stored
    assert [r.body["text"] for r in revisions] == ["draft"]
    error = await refused(
        ErrorCode.CONFLICT,
        world.operations.apply("alice", DM, "edit", target.seq, "e2", body={"text": "late"}, base_version=1),
    )
    assert error.detail is not None
    assert error.detail["version"] == 2


async def test_edits_are_checked(world: World) -> None:
    target = await world.send("alice", DM, "text")
    apply = world.operations.apply
    await refused(ErrorCode.FORBIDDEN, apply("bob", DM, "edit", target.seq, "e", body={"text": "x"}, base_version=1))
    for key in ("reply_to", "forwarded"):
        body: dict[str, Any] = {"text": "x", key: {"seq": 1}}
        error = await refused(ErrorCode.INVALID, apply("alice", DM, "edit", target.seq, "e", body=body, base_version=1))
        assert key in error.message
    await refused(ErrorCode.INVALID, apply("alice", DM, "edit", target.seq, "e", body={"txt": "x"}, base_version=1))
    await refused(ErrorCode.INVALID, apply("alice", DM, "edit", target.seq, "e", body={"text": "x"}))
    await refused(ErrorCode.INVALID, apply("alice", DM, "edit", target.seq, "e", base_version=1))
    image, _ = await world.router.send("alice", DM, "img", "image", {"url": "https://x/y.png", "w": 1, "h": 1})
    error = await refused(
        ErrorCode.INVALID, apply("alice", DM, "edit", image.seq, "e", body={"text": "x"}, base_version=1)
    )
    assert "text messages" in error.message
    await refused(ErrorCode.INVALID, apply("alice", DM, "pin", target.seq, "e"))
    await refused(ErrorCode.NOT_FOUND, apply("alice", DM, "recall", 99, "e"))
    await refused(ErrorCode.FORBIDDEN, apply("carol", DM, "recall", target.seq, "e"))
    assert await world.log.max_seq(DM) == 2  # nothing was stored


async def test_an_edit_is_screened(tmp_path: Path) -> None:
    async with open_world(tmp_path / "f.db", content_filter=True) as world:
        await world.users("alice", "bob")
        screen = world.router._filter
        assert screen is not None
        await screen.put_rule("spam", pattern="spam", match="word", action="mask")
        target = await world.send("alice", DM, "fine")
        result = await world.operations.apply(
            "alice", DM, "edit", target.seq, "e", body={"text": "spam"}, base_version=1
        )
        assert result.event.body["body"] == {"text": "****"}


async def test_reactions_add_and_remove_once_per_user(world: World) -> None:
    target = await world.send("alice", DM, "nice")
    apply = world.operations.apply
    added = await apply("bob", DM, "react", target.seq, "r1", emoji="👍")
    assert added.event.body == {"target": target.seq, "target_id": target.msg_id, "emoji": "👍"}
    assert added.version == 1  # a reaction does not make a new version
    [stored] = await world.log.get(DM, [target.seq])
    assert stored.reactions == {"👍": ["bob"]}
    await refused(ErrorCode.CONFLICT, apply("bob", DM, "react", target.seq, "r2", emoji="👍"))
    await apply("alice", DM, "react", target.seq, "r3", emoji="👍")
    await refused(ErrorCode.CONFLICT, apply("alice", DM, "unreact", target.seq, "r4", emoji="🎉"))
    await apply("bob", DM, "unreact", target.seq, "r5", emoji="👍")
    [stored] = await world.log.get(DM, [target.seq])
    assert stored.reactions == {"👍": ["alice"]}
    await refused(ErrorCode.INVALID, apply("bob", DM, "react", target.seq, "r6"))
    await refused(ErrorCode.INVALID, apply("bob", DM, "unreact", target.seq, "r6", emoji=""))


async def test_a_message_takes_a_bounded_number_of_reaction_kinds(world: World) -> None:
    target = await world.send("alice", DM, "popular")
    for i in range(MAX_REACTION_KINDS):
        await world.operations.apply("bob", DM, "react", target.seq, f"r{i}", emoji=f"e{i}")
    await refused(ErrorCode.INVALID, world.operations.apply("bob", DM, "react", target.seq, "over", emoji="new"))
    await world.operations.apply("alice", DM, "react", target.seq, "known", emoji="e0")  # a kind already there


async def test_operations_need_a_readable_content_message(world: World) -> None:
    conv = await world.group("team", "alice", "bob")
    notice = await world.router.send_system("alice", conv, {"event": "renamed"}, ["alice", "bob"])
    await refused(ErrorCode.NOT_FOUND, world.operations.apply("alice", conv, "react", notice.seq, "o", emoji="x"))
    target = await world.send("alice", conv, "t")
    event = await world.operations.apply("bob", conv, "react", target.seq, "o2", emoji="x")
    await refused(ErrorCode.NOT_FOUND, world.operations.apply("alice", conv, "react", event.event.seq, "o3", emoji="x"))
    await refused(ErrorCode.FORBIDDEN, world.operations.apply("carol", conv, "react", target.seq, "o4", emoji="x"))


async def test_delete_for_me_hides_for_that_user_on_every_device(world: World) -> None:
    one = await world.send("bob", DM, "one")
    two = await world.send("bob", DM, "two")
    react = await world.operations.apply("alice", DM, "react", one.seq, "r", emoji="x")
    world.fanout.clear()
    hidden = await world.operations.hide("alice", "phone", DM, [two.seq, one.seq, two.seq])
    assert (hidden.conv, hidden.seqs) == (DM, [one.seq, two.seq])
    assert hidden.version > 0
    [(uids, pushed, skip)] = world.fanout.of("hidden")
    assert (uids, pushed, skip) == (["alice"], hidden, ("alice", "phone"))
    assert world.fanout.of("msg") == []  # no event in the log
    error = await refused(ErrorCode.NOT_FOUND, world.operations.hide("alice", "", DM, [react.event.seq]))
    assert str(react.event.seq) in error.message
    await refused(ErrorCode.NOT_FOUND, world.operations.hide("alice", "", DM, [one.seq, 99]))
    again = await world.operations.hide("alice", "", DM, [one.seq])
    assert again.version > hidden.version
    assert world.fanout.of("hidden")[-1][2] is None


async def test_forward_one_message_as_it_is(world: World) -> None:
    await world.send("alice", DM, "quoted")
    source = await world.send("bob", DM, "look", mentions=["alice"], reply_to={"seq": 1})
    to = "d:alice:carol"
    copy, duplicate = await world.operations.forward("alice", DM, [source.seq], to, "f1", device="phone")
    assert not duplicate
    assert (copy.conv, copy.kind, copy.sender) == (to, "text", "alice")
    assert copy.body == {"text": "look", "forwarded": {"sender": "bob", "ts": source.ts, "msg_id": source.msg_id}}
    again, duplicate = await world.operations.forward("alice", DM, [source.seq], to, "f1")
    assert (again, duplicate) == (copy, True)
    assert world.fanout.of("msg")[-1][2] == ("alice", "phone")


async def test_forward_several_as_one_merged_message(world: World) -> None:
    first = await world.send("bob", DM, "one", mentions=["alice"])
    second = await world.send("alice", DM, "two", reply_to={"seq": 1})
    merged, _ = await world.operations.forward(
        "alice", DM, [first.seq, second.seq, first.seq], "d:alice:carol", "f", title="chat"
    )
    assert merged.kind == "merged"
    assert merged.body == {
        "title": "chat",
        "items": [
            {"sender": "bob", "kind": "text", "body": {"text": "one"}, "ts": first.ts},
            {"sender": "alice", "kind": "text", "body": {"text": "two"}, "ts": second.ts},
        ],
    }


async def test_forward_needs_readable_messages_and_both_conversations(tmp_path: Path) -> None:
    async with open_world(tmp_path / "f.db", max_body_bytes=200) as world:
        await world.users("alice", "bob", "carol")
        kept = await world.send("bob", DM, "kept")
        gone = await world.send("bob", DM, "gone")
        await world.operations.apply("bob", DM, "recall", gone.seq, "r")
        forward = world.operations.forward
        await refused(ErrorCode.NOT_FOUND, forward("alice", DM, [kept.seq, 99], "d:alice:carol", "f1"))
        await refused(ErrorCode.NOT_FOUND, forward("alice", DM, [3], "d:alice:carol", "f2"))  # the recall event
        await refused(ErrorCode.GONE, forward("alice", DM, [gone.seq], "d:alice:carol", "f3"))
        await refused(ErrorCode.FORBIDDEN, forward("carol", DM, [kept.seq], "d:alice:carol", "f4"))
        await refused(ErrorCode.FORBIDDEN, forward("alice", DM, [kept.seq], "d:bob:carol", "f5"))
        big = [await world.send("bob", DM, "x" * 60, cmid=f"big-{i}") for i in range(3)]
        await refused(ErrorCode.TOO_LARGE, forward("alice", DM, [m.seq for m in big], "d:alice:carol", "f6"))
        assert await world.log.max_seq("d:alice:carol") == 0


async def test_delete_for_me_cannot_reach_below_a_cleared_history(world: World) -> None:
    from flare_im.backends.relational.base import SettingsChange

    for i in range(3):
        await world.send("bob", DM, f"m{i}")
    await world.sync.update_settings("alice", "", DM, SettingsChange(cleared_seq=2))
    for seq in (1, 2):
        await refused(ErrorCode.NOT_FOUND, world.operations.hide("alice", "", DM, [seq]))
    assert (await world.operations.hide("alice", "", DM, [3])).seqs == [3]


async def test_a_retried_op_reports_what_the_first_answer_did(world: World) -> None:
    target = await world.send("alice", DM, "t")
    first = await world.operations.apply("alice", DM, "edit", target.seq, "e", body={"text": "u"}, base_version=1)
    again = await world.operations.apply("alice", DM, "edit", target.seq, "e", body={"text": "u"}, base_version=1)
    assert (again.target, again.version, again.duplicate) == (first.target, first.version, True)
    react = await world.operations.apply("bob", DM, "react", target.seq, "r", emoji="x")
    retried = await world.operations.apply("bob", DM, "react", target.seq, "r", emoji="x")
    assert (retried.event, retried.target, retried.duplicate) == (react.event, target.seq, True)
    assert retried.version == 0  # a reaction event carries no version


async def test_a_gone_target_says_what_happened_to_it(world: World) -> None:
    target = await world.send("alice", DM, "oops")
    await world.operations.apply("alice", DM, "recall", target.seq, "r")
    error = await refused(ErrorCode.GONE, world.operations.apply("bob", DM, "react", target.seq, "x", emoji="x"))
    assert error.detail == {"state": "recalled", "version": 2}
    assert error.message == "the message was recalled"


async def test_an_op_without_a_device_is_pushed_to_every_device(world: World) -> None:
    target = await world.send("alice", DM, "t")
    await world.operations.apply("bob", DM, "react", target.seq, "r", emoji="x")
    assert world.fanout.of("msg")[-1][2] is None


async def test_a_retried_forward_returns_the_copy_even_if_the_source_is_gone_since(world: World) -> None:
    source = await world.send("bob", DM, "look")
    copy, _ = await world.operations.forward("alice", DM, [source.seq], "d:alice:carol", "f")
    await world.operations.apply("bob", DM, "recall", source.seq, "r")
    again, duplicate = await world.operations.forward("alice", DM, [source.seq], "d:alice:carol", "f")
    assert (again, duplicate) == (copy, True)


async def test_forward_defaults_no_title_and_every_device(world: World) -> None:
    first = await world.send("bob", DM, "one")
    second = await world.send("bob", DM, "two")
    merged, _ = await world.operations.forward("alice", DM, [first.seq, second.seq], "d:alice:carol", "f")
    assert merged.body["title"] == ""
    assert world.fanout.of("msg")[-1][2] is None


async def test_forward_cannot_reach_below_a_cleared_history(world: World) -> None:
    from flare_im.backends.relational.base import SettingsChange

    for i in range(3):
        await world.send("bob", DM, f"m{i}")
    await world.sync.update_settings("alice", "", DM, SettingsChange(cleared_seq=2))
    await refused(ErrorCode.NOT_FOUND, world.operations.forward("alice", DM, [2], "d:alice:carol", "f"))
    copy, _ = await world.operations.forward("alice", DM, [3], "d:alice:carol", "f2")
    assert copy.body["text"] == "m2"
