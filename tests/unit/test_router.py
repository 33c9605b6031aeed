"""The send path (src/flare_im/services/router.py) in one process: who gets a message, what the sender's
list says, retries by cmid (local cache, log, shared store), the per-user rate, quotes, mentions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.clock import ManualClock
from tests.unit.world import World, open_world

from flare_im.backends.idempotency.memory import MemoryIdempotencyStore
from flare_im.backends.message_log.base import Change
from flare_im.backends.ratelimit.memory import MemoryRateLimiter
from flare_im.backends.relational.base import SettingsChange
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import Message
from flare_im.services.idempotency import IdempotencyCache
from flare_im.services.router import edit_conflict

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


async def test_a_message_is_stored_acked_and_pushed_to_both_users_but_the_sending_device(world: World) -> None:
    message, duplicate = await world.router.send("alice", DM, "c1", "text", {"text": "hi"}, device="phone")
    assert not duplicate
    assert (message.conv, message.seq, message.sender, message.cmid, message.body) == (
        DM,
        1,
        "alice",
        "c1",
        {"text": "hi"},
    )
    assert await world.log.get(DM, [1]) == [message]
    [(uids, pushed, skip)] = world.fanout.of("msg")
    assert (sorted(uids), pushed, skip) == (["alice", "bob"], message, ("alice", "phone"))
    second, _ = await world.router.send("bob", DM, "c2", "text", {"text": "yo"})  # no device: nobody skipped
    assert second.seq == 2
    assert int(second.msg_id) > int(message.msg_id)
    assert world.fanout.of("msg")[-1][2] is None


async def test_the_sender_has_read_its_own_message(world: World) -> None:
    await world.send("alice", DM, "one")
    await world.send("alice", DM, "two")
    alice = (await world.sync.conversations("alice", since=0, limit=10)).items[0]
    bob = (await world.sync.conversations("bob", since=0, limit=10)).items[0]
    assert (alice.read_seq, alice.unread) == (2, 0)
    assert (bob.read_seq, bob.unread) == (0, 2)


async def test_a_retry_gets_the_first_message_back_and_pushes_nothing(world: World) -> None:
    first, _ = await world.router.send("alice", DM, "same", "text", {"text": "hi"})
    world.fanout.clear()
    again, duplicate = await world.router.send("alice", DM, "same", "text", {"text": "changed"})
    assert duplicate
    assert again == first
    assert world.fanout.pushes == []
    assert await world.log.max_seq(DM) == 1
    other, duplicate = await world.router.send("bob", DM, "same", "text", {"text": "hi"})  # the key is per sender
    assert (other.seq, duplicate) == (2, False)


async def test_a_retry_the_cache_forgot_is_found_in_the_log(world: World) -> None:
    first, _ = await world.router.send("alice", DM, "c1", "text", {"text": "hi"})
    world.router._idempotency = fresh = IdempotencyCache(window_s=300, max_entries=10)  # a restart
    fresh.preload([("alice", "c1")], complete=True)
    again, duplicate = await world.router.send("alice", DM, "c1", "text", {"text": "hi"})
    assert (again, duplicate) == (first, True)
    assert fresh.get(("alice", "c1")) == first  # remembered now
    assert await world.router.retry_of("alice", "c1") == first
    assert await world.router.retry_of("alice", "never") is None


async def test_retry_of_looks_in_the_log_for_a_key_the_cache_may_have(world: World) -> None:
    first, _ = await world.router.send("alice", DM, "op-1", "text", {"text": "hi"})
    world.router._idempotency = fresh = IdempotencyCache(window_s=300, max_entries=10)
    fresh.preload([("alice", "op-1")], complete=True)
    assert await world.router.retry_of("alice", "op-1") == first
    assert fresh.get(("alice", "op-1")) == first


async def test_only_members_send(world: World) -> None:
    conv = await world.group("team", "alice", "bob")
    await refused(ErrorCode.FORBIDDEN, world.router.send("carol", conv, "c", "text", {"text": "x"}))
    await refused(ErrorCode.NOT_FOUND, world.router.send("alice", "d:alice:nobody", "c", "text", {"text": "x"}))
    await refused(ErrorCode.INVALID, world.router.send("alice", "d:bob:alice", "c", "text", {"text": "x"}))
    assert world.fanout.pushes == []
    message = await world.send("bob", conv, "in")
    assert sorted(world.fanout.of("msg")[0][0]) == ["alice", "bob"]
    assert message.seq == 1


async def test_the_per_user_rate_is_enforced_per_second(tmp_path: Path) -> None:
    clock = ManualClock()
    limiter = MemoryRateLimiter(clock=clock)
    async with open_world(tmp_path / "r.db", rate_limiter=limiter, user_send_rate_per_s=2) as world:
        await world.users("alice", "bob")
        await world.send("alice", DM, "1")
        await world.send("alice", DM, "2")
        error = await refused(ErrorCode.RATE_LIMITED, world.router.send("alice", DM, "c3", "text", {"text": "3"}))
        assert "2 messages/s" in error.message
        await world.send("bob", DM, "bob's own budget")
        clock.advance(0.6)  # one token a half second
        await world.send("alice", DM, "3")
        assert await world.log.max_seq(DM) == 4
        # A retry of a stored message is answered from the cache, whatever the rate.
        _, duplicate = await world.router.send("alice", DM, "alice-1", "text", {"text": "1"})
        assert duplicate


async def test_bodies_are_validated_and_screened(tmp_path: Path) -> None:
    async with open_world(tmp_path / "f.db", max_body_bytes=64, content_filter=True) as world:
        await world.users("alice", "bob")
        await refused(ErrorCode.INVALID, world.router.send("alice", DM, "c", "text", {"txt": "no text"}))
        await refused(ErrorCode.TOO_LARGE, world.router.send("alice", DM, "c", "text", {"text": "x" * 100}))
        assert world.fanout.pushes == []
        filter_ = world.router._filter
        assert filter_ is not None
        await filter_.put_rule("spam", pattern="spam", match="word", action="mask")
        message = await world.send("alice", DM, "no spam")
        assert message.body == {"text": "no ****"}
        # A trusted body (a forward, built by the server) is only measured.
        trusted, _ = await world.router.send("alice", DM, "t", "merged", {"items": "spam"}, trusted=True)
        assert trusted.body == {"items": "spam"}
        await refused(
            ErrorCode.TOO_LARGE, world.router.send("alice", DM, "t2", "merged", {"items": "x" * 100}, trusted=True)
        )


async def test_a_reply_carries_a_snapshot_of_the_quoted_message(world: World) -> None:
    quoted = await world.send("bob", DM, "the original text")
    reply = await world.send("alice", DM, "answer", reply_to={"seq": quoted.seq})
    assert reply.body["reply_to"] == {
        "seq": quoted.seq,
        "msg_id": quoted.msg_id,
        "sender": "bob",
        "kind": "text",
        "snippet": "the original text",
    }
    await world.operations.apply("bob", DM, "recall", quoted.seq, "op-1")
    later = await world.send("alice", DM, "again", reply_to={"seq": quoted.seq})
    assert later.body["reply_to"] == {
        "seq": quoted.seq,
        "msg_id": quoted.msg_id,
        "sender": "bob",
        "kind": "text",
        "state": "recalled",
    }


@pytest.mark.parametrize("ref", [{}, {"seq": 0}, {"seq": True}, {"seq": "1"}, 1, {"seq": -1}], ids=repr)
async def test_a_reply_needs_the_seq_of_a_message(world: World, ref: object) -> None:
    await world.send("bob", DM, "x")
    error = await refused(
        ErrorCode.INVALID, world.router.send("alice", DM, "r", "text", {"text": "a", "reply_to": ref})
    )
    assert "reply_to" in error.message


async def test_a_reply_to_something_that_is_not_a_readable_message_is_not_found(world: World) -> None:
    conv = await world.group("team", "alice", "bob")
    notice = await world.router.send_system("alice", conv, {"event": "renamed"}, ["alice", "bob"])
    for seq in (notice.seq, 99):
        await refused(
            ErrorCode.NOT_FOUND,
            world.router.send("bob", conv, f"r{seq}", "text", {"text": "a", "reply_to": {"seq": seq}}),
        )
    first = await world.send("alice", conv, "before bob cleared")
    await world.sync.update_settings("bob", "", conv, SettingsChange(cleared_seq=first.seq))
    await refused(
        ErrorCode.NOT_FOUND, world.router.send("bob", conv, "r", "text", {"text": "a", "reply_to": {"seq": first.seq}})
    )
    await world.send("alice", conv, "alice still sees it", reply_to={"seq": first.seq})


async def test_system_notices_reach_every_recipient(world: World) -> None:
    conv = await world.group("team", "alice", "bob")
    notice = await world.router.send_system("alice", conv, {"event": "renamed", "name": "T"}, ["alice", "bob"])
    assert (notice.kind, notice.sender, notice.body) == ("system", "alice", {"event": "renamed", "name": "T"})
    assert notice.cmid.startswith("sys-")
    [(uids, pushed, skip)] = world.fanout.of("msg")
    assert (uids, pushed, skip) == (["alice", "bob"], notice, None)
    other = await world.router.send_system("alice", conv, {"event": "x"}, [])
    assert other.cmid != notice.cmid


async def test_mentions_count_for_the_mentioned_only(world: World) -> None:
    conv = await world.group("team", "alice", "bob", "carol")
    await world.send("alice", conv, "hey", mentions=["bob", "alice", "bob"])
    await world.send("alice", conv, "all of you", mentions=["all"])
    page = {u: (await world.sync.conversations(u, since=0, limit=5)).items[0] for u in ("alice", "bob", "carol")}
    assert page["bob"].unread_mentions == 2
    assert page["carol"].unread_mentions == 1
    assert page["alice"].unread_mentions == 0


async def test_the_shared_store_answers_retries_across_nodes(tmp_path: Path) -> None:
    shared = MemoryIdempotencyStore()
    assert await shared.restore([], complete=True, window_s=300)
    async with open_world(tmp_path / "s.db", shared_idempotency=shared) as world:
        await world.users("alice", "bob")
        first, _ = await world.router.send("alice", DM, "c1", "text", {"text": "hi"})
        assert await shared.get("alice", "c1") is not None
        world.router._idempotency = IdempotencyCache(window_s=300, max_entries=10)  # another node's cache
        again, duplicate = await world.router.send("alice", DM, "c1", "text", {"text": "hi"})
        assert (again, duplicate) == (first, True)
        assert await world.router.retry_of("alice", "c1") == first
        assert await world.router.retry_of("alice", "c2") is None  # the store vouches: not sent
        # The key is (sender, cmid): another cmid, or another sender's same cmid, is a new message.
        other, duplicate = await world.router.send("alice", DM, "c2", "text", {"text": "2"})
        assert (other.seq, duplicate) == (2, False)
        bobs, duplicate = await world.router.send("bob", DM, "c1", "text", {"text": "3"})
        assert (bobs.seq, duplicate) == (3, False)


async def test_a_shared_store_that_lost_its_data_sends_the_node_to_the_log(tmp_path: Path) -> None:
    shared = MemoryIdempotencyStore()  # never restored: it vouches for nothing
    async with open_world(tmp_path / "s.db", shared_idempotency=shared) as world:
        await world.users("alice", "bob")
        first, duplicate = await world.router.send("alice", DM, "c1", "text", {"text": "hi"})
        assert not duplicate
        shared._state.clear()  # Redis restarted empty
        world.router._idempotency = IdempotencyCache(window_s=300, max_entries=10)
        assert await world.router.retry_of("alice", "c1") == first  # from the log
        again, duplicate = await world.router.send("alice", DM, "c1", "text", {"text": "hi"})
        assert (again, duplicate) == (first, True)
        world.router._idempotency = IdempotencyCache(window_s=300, max_entries=10)  # yet another node
        assert await world.router.send("alice", DM, "c1", "text", {"text": "hi"}) == (first, True)
        assert await shared.get("alice", "c1") is not None  # the log's answer was stored for that retry
        assert await world.log.max_seq(DM) == 1
        assert await world.router.retry_of("alice", "c9") is None


async def test_a_failed_append_stores_nothing_and_a_retry_can_succeed(world: World) -> None:
    real_append = world.log.append
    calls = 0

    def failing(message: object, version: int) -> object:
        nonlocal calls
        calls += 1
        raise OSError("disk full")

    world.log.append = failing  # type: ignore[method-assign]
    error = await refused(ErrorCode.INTERNAL, world.router.send("alice", DM, "c1", "text", {"text": "hi"}))
    assert error.retryable
    assert error.message == "message not stored"
    assert world.fanout.pushes == []
    world.log.append = real_append  # type: ignore[method-assign]
    message, duplicate = await world.router.send("alice", DM, "c1", "text", {"text": "hi"})
    assert (message.seq, duplicate) == (1, False)  # the seq handed out to the failed append is not skipped


async def test_an_edit_conflict_carries_the_current_version() -> None:
    current = Message(DM, 3, "9", "alice", "c", "text", {"text": "now"}, 1, version=4, edited_at=77)
    error = edit_conflict(current)
    assert error.code is ErrorCode.CONFLICT
    assert error.detail == {"version": 4, "body": {"text": "now"}, "edited_at": 77}
    assert "version 4" in error.message


async def test_an_op_the_log_refuses_is_a_client_error_and_stores_nothing(world: World) -> None:
    target = await world.send("alice", DM, "v1")
    stale = Change(target=target.seq, version=5, body={"text": "x"})  # the log holds version 1, not 4
    error = await refused(
        ErrorCode.CONFLICT, world.router.append_op("alice", DM, "e1", "edit", {}, stale, ["alice", "bob"])
    )
    assert error.detail == {"version": 1, "body": {"text": "v1"}, "edited_at": 0}
    missing = Change(target=99, version=2, state="recalled")
    error = await refused(
        ErrorCode.NOT_FOUND, world.router.append_op("alice", DM, "r1", "recall", {}, missing, ["alice", "bob"])
    )
    assert error.message == "no such message"
    assert not error.retryable
    assert await world.log.max_seq(DM) == 1
    assert [p[0] for p in world.fanout.pushes] == ["msg"]  # only the first send was pushed
    ok = Change(target=target.seq, version=2, state="recalled")
    event = await world.router.append_op("alice", DM, "r1", "recall", {"target": 1}, ok, ["alice", "bob"])
    assert event.seq == 2  # the refused ops' seqs were handed out again


async def test_concurrent_retries_share_the_send_in_flight(world: World) -> None:
    storing, gate = asyncio.Event(), asyncio.Event()
    real_append = world.log.append

    async def slow_append(message: Message, version: int) -> None:
        storing.set()  # the first send is storing its message
        await gate.wait()
        await real_append(message, version)

    world.log.append = slow_append  # type: ignore[method-assign]
    first = asyncio.ensure_future(world.router.send("alice", DM, "same", "text", {"text": "hi"}))
    async with asyncio.timeout(5):
        await storing.wait()
    waiting = [
        asyncio.ensure_future(world.router.send("alice", DM, "same", "text", {"text": "hi"})),
        asyncio.ensure_future(world.router.retry_of("alice", "same")),
    ]
    await asyncio.sleep(0)
    gate.set()
    stored, new = await first
    assert not new
    assert await waiting[0] == (stored, True)
    assert await waiting[1] == stored
    assert await world.log.max_seq(DM) == 1
    assert len(world.fanout.of("msg")) == 1


async def test_a_rate_of_zero_means_no_limit_and_one_means_one_a_second(tmp_path: Path) -> None:
    clock = ManualClock()
    async with open_world(tmp_path / "z.db", rate_limiter=MemoryRateLimiter(clock=clock)) as world:
        await world.users("alice", "bob")
        for i in range(5):
            await world.send("alice", DM, f"{i}")
    async with open_world(
        tmp_path / "o.db", rate_limiter=MemoryRateLimiter(clock=clock), user_send_rate_per_s=1
    ) as world:
        await world.users("alice", "bob")
        await world.send("alice", DM, "one")
        await refused(ErrorCode.RATE_LIMITED, world.router.send("alice", DM, "c2", "text", {"text": "two"}))


async def test_a_failed_append_releases_its_claim_in_the_shared_store(tmp_path: Path) -> None:
    shared = MemoryIdempotencyStore()
    assert await shared.restore([], complete=True, window_s=300)
    async with open_world(tmp_path / "s.db", shared_idempotency=shared) as world:
        await world.users("alice", "bob")
        real_append = world.log.append

        def failing(message: object, version: int) -> object:
            raise OSError("disk full")

        world.log.append = failing  # type: ignore[method-assign]
        await refused(ErrorCode.INTERNAL, world.router.send("alice", DM, "c1", "text", {"text": "hi"}))
        world.log.append = real_append  # type: ignore[method-assign]
        for _ in range(10):  # the release runs in the background
            await asyncio.sleep(0)
        # Another node retries at once: the claim is free (not held for its 8 s), and nothing was stored.
        world.router._idempotency = IdempotencyCache(window_s=300, max_entries=10)
        async with asyncio.timeout(2):
            message, duplicate = await world.router.send("alice", DM, "c1", "text", {"text": "hi"})
        assert (message.seq, duplicate) == (1, False)
