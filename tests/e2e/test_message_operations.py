"""Message operations (Y3, Y7) over real sockets: recall, delete, edit, reply/quote, reactions, delete for
me and forward, on several devices per user, online and after an offline catch-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import Message
from flare_im.sdk.client import FlareClient

from .conftest import Harness, ServerProcess
from .witness import Wire, Witness, rest_barrier

DM = "d:alice:bob"


async def _members(harness: Harness, *names: str) -> None:
    for n in names:
        await harness.user(n)


async def _next_kind(client: FlareClient, kind: str) -> Message:
    while True:
        m = await client.next_message(5)
        if m.kind == kind:
            return m


async def _one(client: FlareClient, conv: str, seq: int) -> Message:
    [m] = [m for m in await client.history(conv, after=seq - 1) if m.seq == seq]
    return m


async def _error(coro: object) -> FlareError:
    with pytest.raises(FlareError) as err:
        await coro  # type: ignore[misc]
    return err.value


async def test_edit_reaches_every_device_and_keeps_history(harness: Harness) -> None:
    await _members(harness, "alice", "bob")
    wires = {"phone": Wire(), "laptop": Wire(), "bob": Wire()}
    phone = await harness.device("alice", "phone", on_frame=wires["phone"])
    laptop = await harness.device("alice", "laptop", on_frame=wires["laptop"])
    bob = await harness.device("bob", on_frame=wires["bob"])
    sent = await phone.send(DM, "helo")
    assert (await bob.next_message()).body == {"text": "helo"}
    await laptop.next_message()

    ack = await phone.edit(DM, sent.seq, "hello", base_version=1)
    assert (ack.target, ack.version, ack.seq) == (sent.seq, 2, sent.seq + 1)  # the edit has its own seq
    for device in (bob, laptop):
        event = await device.next_message()
        assert (event.kind, event.seq, event.body["target"], event.body["version"]) == ("edit", ack.seq, sent.seq, 2)
        assert event.body["body"] == {"text": "hello"}
    # On the wire: each event once to every device but the one that sent it.
    barrier = await rest_barrier(harness, DM, "bob", *wires.values())
    assert wires["bob"].seqs(DM) == [sent.seq, ack.seq, barrier]
    assert wires["laptop"].seqs(DM) == [sent.seq, ack.seq, barrier]
    assert wires["phone"].seqs(DM) == [barrier]
    current = await _one(bob, DM, sent.seq)
    assert (current.body, current.version, current.edited_at) == ({"text": "hello"}, 2, ack.ts)

    await phone.edit(DM, sent.seq, "hello!", base_version=2)
    history = await harness.rest("bob").request("GET", f"/v1/conversations/{DM}/messages/{sent.seq}/revisions")
    assert history["message"]["body"] == {"text": "hello!"}
    assert [(r["version"], r["body"]["text"]) for r in history["revisions"]] == [(1, "helo"), (2, "hello")]


async def test_concurrent_edits_exactly_one_wins(harness: Harness) -> None:
    await _members(harness, "alice", "bob")
    phone = await harness.device("alice", "phone")
    laptop = await harness.device("alice", "laptop")
    sent = await phone.send(DM, "draft")
    results = await asyncio.gather(
        phone.edit(DM, sent.seq, "from the phone", base_version=1, attempts=1),
        laptop.edit(DM, sent.seq, "from the laptop", base_version=1, attempts=1),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, FlareError)]
    assert (len(wins), len(losses)) == (1, 1)
    loss = losses[0]
    assert loss.code == ErrorCode.CONFLICT
    assert loss.detail is not None
    assert loss.detail["version"] == 2
    winner_text = loss.detail["body"]["text"]
    assert (await _one(phone, DM, sent.seq)).body["text"] == winner_text
    assert (await phone.pull(DM)).max_seq == sent.seq + 1  # one edit event: the loser stored nothing
    # Resolving: the loser edits on top of the current version.
    ack = await (laptop if winner_text == "from the phone" else phone).edit(DM, sent.seq, "merged", base_version=2)
    assert ack.version == 3


async def test_recall_rules_and_marker(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env_overrides={"FLARE_RECALL_WINDOW_S": "1"})
    srv.start()
    harness = Harness(srv)
    try:
        await _members(harness, "alice", "bob", "carol", "dave")
        alice = await harness.device("alice")
        bob = await harness.device("bob")
        group = await harness.rest("alice").create_group("team", ["bob", "carol"], group_id="team")
        conv = group["conv"]
        old = await bob.send(conv, "old news")
        fresh = await bob.send(conv, "secret")
        quoted = await alice.reply(conv, fresh.seq, "what secret?")

        # Not the sender, not an admin: refused. Not a member: refused. Neither changes anything.
        carol = await harness.device("carol")
        dave = await harness.device("dave")
        team = await Witness.open(harness, conv, ["alice", "bob", "carol"], others=["dave"])
        await team.refused(ErrorCode.FORBIDDEN, carol.recall(conv, fresh.seq, attempts=1))
        await team.refused(ErrorCode.FORBIDDEN, carol.delete(conv, fresh.seq, attempts=1))
        await team.refused(ErrorCode.FORBIDDEN, dave.recall(conv, fresh.seq, attempts=1))

        ack = await bob.recall(conv, fresh.seq, opid="recall-1")
        again = await bob.recall(conv, fresh.seq, opid="recall-1")  # a retried op applies once
        assert (again.seq, again.duplicate, ack.duplicate) == (ack.seq, True, False)
        recalled = await _one(carol, conv, fresh.seq)
        assert (recalled.state, recalled.body, recalled.version) == ("recalled", {}, 2)
        reply = await _one(carol, conv, quoted.seq)  # the quote no longer carries the text
        assert reply.body["reply_to"] == {"seq": fresh.seq, "msg_id": recalled.msg_id, "sender": "bob",
                                          "kind": "text", "state": "recalled"}  # fmt: skip
        await team.barrier(skip_earlier=True)  # past the pushes of the recall
        await team.refused(ErrorCode.GONE, bob.edit(conv, fresh.seq, "x", base_version=2, attempts=1))
        late_reply = await alice.reply(conv, fresh.seq, "too late")
        assert (await _one(alice, conv, late_reply.seq)).body["reply_to"]["state"] == "recalled"

        await asyncio.sleep(1.2)  # past the sender's window
        await team.barrier(skip_earlier=True)
        err = await team.refused(ErrorCode.FORBIDDEN, bob.recall(conv, old.seq, attempts=1))
        assert "window" in err.message
        await team.refused(ErrorCode.FORBIDDEN, bob.delete(conv, old.seq, attempts=1))
        deleted = await alice.delete(conv, old.seq)  # the owner may at any time
        assert (await _one(bob, conv, old.seq)).state == "deleted"
        assert deleted.version == 2
    finally:
        await harness.close()
        srv.stop()


async def test_reactions_counts_and_who(harness: Harness) -> None:
    await _members(harness, "alice", "bob", "carol")
    alice = await harness.device("alice")
    bob = await harness.device("bob")
    carol = await harness.device("carol")
    conv = (await harness.rest("alice").create_group("fun", ["bob", "carol"], group_id="fun"))["conv"]
    sent = await alice.send(conv, "lunch?")
    await bob.react(conv, sent.seq, "👍")
    await carol.react(conv, sent.seq, "👍")
    await carol.react(conv, sent.seq, "🍕")
    fun = await Witness.open(harness, conv, ["alice", "bob", "carol"])
    await fun.refused(ErrorCode.CONFLICT, bob.react(conv, sent.seq, "👍", attempts=1))  # already reacted
    await fun.refused(ErrorCode.CONFLICT, bob.react(conv, sent.seq, "🍕", remove=True, attempts=1))  # never did
    event = await _next_kind(alice, "react")
    assert (event.sender, event.body["emoji"], event.body["target"]) == ("bob", "👍", sent.seq)
    await carol.react(conv, sent.seq, "🍕", remove=True)
    current = await _one(alice, conv, sent.seq)
    assert current.reactions == {"👍": ["bob", "carol"]}
    assert current.version == 1  # reactions never make an edit conflict
    assert (await alice.edit(conv, sent.seq, "lunch at 12?", base_version=1)).version == 2


async def test_delete_for_me_hides_on_my_devices_only(harness: Harness) -> None:
    await _members(harness, "alice", "bob")
    phone = await harness.device("alice", "phone")
    laptop = await harness.device("alice", "laptop")
    bob = await harness.device("bob")
    sent = await bob.send(DM, "embarrassing")
    await phone.next_message()
    hidden = await phone.delete_for_me(DM, sent.seq)
    assert hidden.seqs == [sent.seq]
    pushed = await laptop.next_hidden()
    assert (pushed.conv, pushed.seqs) == (DM, [sent.seq])
    mine = await _one(laptop, DM, sent.seq)
    assert (mine.state, mine.body) == ("hidden", {})  # the seq stays: no gap
    assert (await _one(bob, DM, sent.seq)).body == {"text": "embarrassing"}  # others still see it
    # A new device learns it from sync.
    tablet = await harness.device("alice", "tablet")
    [entry] = [c for c in await tablet.sync(0) if c.conv == DM]
    assert entry.hidden_seqs == [sent.seq]
    # It was the last message: the list entry's last is the tombstone too (protocol.md §4), not the text.
    assert entry.last is not None
    assert (entry.last.seq, entry.last.state, entry.last.body) == (sent.seq, "hidden", {})
    [theirs] = [c for c in await bob.sync(0) if c.conv == DM]
    assert theirs.last is not None
    assert (theirs.last.state, theirs.last.body) == ("", {"text": "embarrassing"})


async def test_forward_single_and_merged(harness: Harness) -> None:
    await _members(harness, "alice", "bob", "carol")
    alice = await harness.device("alice")
    bob = await harness.device("bob")
    a = await bob.send(DM, "first")
    b = await bob.send(DM, body={"url": "https://x/y.png", "width": 10, "height": 10}, kind="image")
    one = await alice.forward(DM, [a.seq], "d:alice:carol")
    copied = await _one(alice, "d:alice:carol", one.seq)
    assert copied.body == {"text": "first", "forwarded": {"sender": "bob", "ts": a.ts, "msg_id": a.msg_id}}
    merged = await alice.forward(DM, [a.seq, b.seq], "d:alice:carol", title="from bob")
    m = await _one(alice, "d:alice:carol", merged.seq)
    assert m.kind == "merged"
    assert m.body["title"] == "from bob"
    assert [(i["sender"], i["kind"]) for i in m.body["items"]] == [("bob", "text"), ("bob", "image")]
    # Only into a conversation the user belongs to; only messages the user can read.
    bob_carol = await Witness.open(harness, "d:bob:carol", ["bob", "carol"], others=["alice"])
    await bob_carol.refused(ErrorCode.FORBIDDEN, alice.forward(DM, [a.seq], "d:bob:carol", attempts=1))
    alice_carol = await Witness.open(harness, "d:alice:carol", ["alice", "carol"])
    await alice_carol.refused(ErrorCode.NOT_FOUND, alice.forward(DM, [999], "d:alice:carol", attempts=1))
    # Forged server-only fields are refused.
    forged = alice.send("d:alice:carol", body={"text": "x", "forwarded": {"sender": "ceo"}}, attempts=1)
    await alice_carol.refused(ErrorCode.INVALID, forged)
    merged = alice.send("d:alice:carol", body={"title": "", "items": []}, kind="merged", attempts=1)
    await alice_carol.refused(ErrorCode.INVALID, merged)


async def test_offline_device_converges_after_catch_up(harness: Harness) -> None:
    await _members(harness, "alice", "bob")
    alice = await harness.device("alice")
    wire = Wire()
    bob = await harness.device("bob", echo_own=True, on_frame=wire)
    x = await alice.send(DM, "one")
    y = await alice.send(DM, "two")
    await bob.next_message()
    await bob.next_message()
    bob.drop_connection()
    await asyncio.sleep(0)
    await alice.edit(DM, x.seq, "one (edited)", base_version=1)
    await alice.recall(DM, y.seq)
    await alice.react(DM, x.seq, "🎉")
    await bob.wait_connected(10)
    seen = [await bob.next_message() for _ in range(3)]
    assert [m.kind for m in seen] == ["edit", "recall", "react"]  # in seq order, after the reconnect
    pulled = await bob.history(DM)
    assert pulled[0].body == {"text": "one (edited)"}
    assert pulled[0].reactions == {"🎉": ["alice"]}
    assert pulled[1].state == "recalled"
    # On the wire: every push once and in seq order (the reconnect may come before some of the operations,
    # which are then pushed), and what bob missed was pulled, not pushed again.
    barrier = await rest_barrier(harness, DM, "alice", wire)
    pushed = wire.seqs(DM)
    assert pushed == sorted(set(pushed))
    assert (pushed[:2], pushed[-1]) == ([x.seq, y.seq], barrier)


async def test_pull_below_cleared_history_is_an_explicit_error(harness: Harness) -> None:
    await _members(harness, "alice", "bob")
    alice = await harness.device("alice")
    acks = [await alice.send(DM, f"m{i}") for i in range(5)]
    await alice.update_settings(DM, clear_to=acks[2].seq)
    err = await _error(alice.pull(DM, after=acks[0].seq))
    assert err.code == ErrorCode.GONE
    assert err.detail == {"min_seq": acks[2].seq + 1, "max_seq": acks[-1].seq}
    assert (await _error(alice.pull(DM, before=acks[1].seq))).code == ErrorCode.GONE
    page = await alice.pull(DM, after=0)  # from the start of what this user can read: fine
    assert [m.seq for m in page.items] == [a.seq for a in acks[3:]]
