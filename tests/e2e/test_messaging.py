"""Real-time messaging over real sockets: 1:1, groups, multi-device, offline sync, receipts, idempotency."""

from __future__ import annotations

import asyncio

import pytest

from flare_im.protocol.codec import Encoding
from flare_im.protocol.errors import ErrorCode, FlareError

from .conftest import Harness
from .witness import Wire, Witness, rest_barrier

DM = "d:alice:bob"


async def test_direct_both_directions(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    wires = {"alice": Wire(), "bob": Wire()}
    alice = await harness.device("alice", on_frame=wires["alice"])
    bob = await harness.device("bob", encoding=Encoding.MSGPACK, on_frame=wires["bob"])

    ack1 = await alice.send(DM, "hi bob")
    got = await bob.next_message()
    assert (got.seq, got.sender, got.body, got.msg_id) == (ack1.seq, "alice", {"text": "hi bob"}, ack1.msg_id)

    ack2 = await bob.send(DM, "hi alice")
    got = await alice.next_message()
    assert (got.seq, got.sender, got.body["text"]) == (ack2.seq, "bob", "hi alice")
    assert (ack1.seq, ack2.seq) == (1, 2)
    assert int(ack2.msg_id) > int(ack1.msg_id)
    # Counted on the wire: each message pushed once, and the sending device gets the ack, not a push of its own
    # message. A REST send reaches every device of both users, after anything pushed before it.
    barrier = await rest_barrier(harness, DM, "alice", *wires.values())
    assert wires["bob"].seqs(DM) == [ack1.seq, barrier]
    assert wires["alice"].seqs(DM) == [ack2.seq, barrier]


async def test_group_of_five_with_two_devices(harness: Harness) -> None:
    names = ["u1", "u2", "u3", "u4", "u5"]
    for n in names:
        await harness.user(n)
    group = await harness.rest("u1").create_group("five", names[1:])
    conv = group["conv"]
    assert group["member_count"] == 5
    wires = {n: Wire() for n in [*names, "tablet"]}
    devices = {n: await harness.device(n, on_frame=wires[n]) for n in names}
    second = await harness.device("u2", "tablet", on_frame=wires["tablet"])
    # The group-created notice reaches every device already online? They connected after it: pull it.
    for n in names:
        await devices[n].catch_up()
        notice = await devices[n].next_message()
        assert notice.kind == "system"
        assert notice.body["event"] == "group_created"
    await second.catch_up()
    assert (await second.next_message()).kind == "system"

    ack = await devices["u2"].send(conv, "hello group")
    for n in ["u1", "u3", "u4", "u5"]:
        m = await devices[n].next_message()
        assert (m.conv, m.seq, m.sender, m.body["text"]) == (conv, ack.seq, "u2", "hello group")
    mine = await second.next_message()  # the sender's other device gets it too
    assert mine.seq == ack.seq
    # On the wire: once to every device but the sending one.
    barrier = await rest_barrier(harness, conv, "u1", *wires.values())
    for n, wire in wires.items():
        assert wire.seqs(conv) == ([barrier] if n == "u2" else [ack.seq, barrier]), n

    # A non-member cannot send or read, and its attempt changes nothing.
    await harness.user("outsider")
    outsider = await harness.device("outsider")
    group_view = await Witness.open(harness, conv, names, others=["outsider"])
    await group_view.refused(ErrorCode.FORBIDDEN, outsider.send(conv, "let me in", attempts=1))
    await group_view.refused(ErrorCode.FORBIDDEN, outsider.pull(conv))


async def test_offline_user_syncs_exactly_the_missed_messages(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice = await harness.device("alice")
    bob = await harness.device("bob")
    await alice.send(DM, "before")
    before = await bob.next_message()
    await bob.read(DM, before.seq)
    seen_version = (await bob.sync(0)) and bob.version
    await bob.close()

    sent = [await alice.send(DM, f"missed {i}") for i in range(25)]
    bob2 = await harness.device("bob")
    bob2.version = seen_version
    changed = await bob2.sync()
    assert [c.conv for c in changed] == [DM]
    summary = changed[0]
    assert summary.max_seq == sent[-1].seq
    assert summary.unread == 25
    missed = await bob2.history(DM, after=1, page=10)
    assert [m.seq for m in missed] == [a.seq for a in sent]
    assert [m.body["text"] for m in missed] == [f"missed {i}" for i in range(25)]


async def test_catch_up_after_reconnect_yields_each_missed_message_once(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice = await harness.device("alice")
    wire = Wire()
    bob = await harness.device("bob", on_frame=wire)
    first = await alice.send(DM, "m0")
    await bob.next_message()
    bob.reconnect = False
    bob.drop_connection()
    await asyncio.sleep(0.2)
    for i in range(1, 6):
        await alice.send(DM, f"m{i}")
    await bob.connect()
    await bob.catch_up()
    got = [await bob.next_message() for _ in range(5)]
    assert [m.body["text"] for m in got] == [f"m{i}" for i in range(1, 6)]
    # On the wire: the missed messages came from the pull, none was pushed again after the reconnect.
    barrier = await rest_barrier(harness, DM, "alice", wire)
    assert wire.seqs(DM) == [first.seq, barrier]
    assert (await bob.next_message()).seq == barrier  # and the stream yielded each missed message once


async def test_unread_counts_and_read_receipts(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice = await harness.device("alice")
    bob_phone = await harness.device("bob", "phone")
    bob_laptop = await harness.device("bob", "laptop")
    for i in range(3):
        await alice.send(DM, f"m{i}")
    [summary] = await bob_laptop.sync(0)
    assert (summary.max_seq, summary.unread, summary.read_seq) == (3, 3, 0)
    [alice_view] = await alice.sync(0)
    assert alice_view.unread == 0  # her own messages are never unread

    await bob_phone.read(DM, 2)
    for device in (bob_laptop, alice):  # the user's other device and the peer
        receipt = await device.next_receipt()
        assert (receipt.conv, receipt.user, receipt.kind, receipt.seq) == (DM, "bob", "read", 2)
    [summary] = await bob_laptop.sync(0)
    assert (summary.unread, summary.read_seq) == (1, 2)

    # Sending implies having read the conversation up to one's own message.
    await bob_phone.send(DM, "reply")
    [summary] = await bob_laptop.sync(0)
    assert (summary.max_seq, summary.unread) == (4, 0)
    [alice_view] = await alice.sync(0)
    assert alice_view.unread == 1
    # Read seq never moves back, and a read beyond the log is an error.
    await bob_phone.read(DM, 1)
    [summary] = await bob_laptop.sync(0)
    assert summary.read_seq == 4
    with pytest.raises(FlareError) as err:
        await bob_phone.read(DM, 99)
    assert err.value.code == ErrorCode.OUT_OF_RANGE

    await bob_phone.delivered(DM, 4)
    receipt = await alice.next_receipt()
    assert (receipt.kind, receipt.seq) == ("delivered", 4)


async def test_idempotent_retry_returns_original_ack(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bob")
    alice_wire, bob_wire = Wire(), Wire()
    alice_tablet = await harness.device("alice", "tablet", on_frame=alice_wire)
    alice = await harness.device("alice")
    bob = await harness.device("bob", on_frame=bob_wire)
    first = await alice.send(DM, "once", cmid="client-42")
    again = await alice.send(DM, "once", cmid="client-42")
    assert (again.seq, again.msg_id, again.duplicate) == (first.seq, first.msg_id, True)
    assert not first.duplicate
    # Also over HTTP, and the retry does not depend on the transport used first.
    http = await harness.rest("alice").send(DM, "client-42", {"text": "once"})
    assert (http["seq"], http["duplicate"]) == (first.seq, True)
    assert [m.seq for m in await bob.history(DM)] == [first.seq]
    # Pushed once, counted on the wire (the SDK's stream would hide a repeat): to bob, and to alice's other
    # device, which the HTTP retry would reach too if it were stored again.
    barrier = await rest_barrier(harness, DM, "bob", alice_wire, bob_wire)
    assert bob_wire.seqs(DM) == [first.seq, barrier]
    assert alice_wire.seqs(DM) == [first.seq, barrier]
    assert alice_tablet.local_max_seq(DM) == barrier


async def test_concurrent_senders_get_distinct_consecutive_seqs(harness: Harness) -> None:
    names = [f"s{i}" for i in range(6)]
    for n in names:
        await harness.user(n)
    group = await harness.rest("s0").create_group("race", names[1:])
    conv = group["conv"]
    senders = [await harness.device(n) for n in names]
    base = (await senders[0].pull(conv)).max_seq

    async def burst(client_index: int) -> list[int]:
        client = senders[client_index]
        acks = await asyncio.gather(*(client.send(conv, f"{client_index}-{k}") for k in range(40)))
        return [a.seq for a in acks]

    results = await asyncio.gather(*(burst(i) for i in range(len(senders))))
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(base + 1, base + 1 + 40 * len(senders)))
    history = await senders[1].history(conv, after=base)
    assert [m.seq for m in history] == seqs


async def test_http_send_reaches_websocket_devices(harness: Harness) -> None:
    await harness.user("alice")
    await harness.user("bot")
    alice = await harness.device("alice")
    ack = await harness.rest("bot").send("d:alice:bot", "from-bot-1", {"text": "beep"})
    m = await alice.next_message()
    assert (m.seq, m.sender, m.body["text"]) == (ack["seq"], "bot", "beep")


async def test_member_sees_messages_from_join_seq(harness: Harness) -> None:
    for n in ("owner", "early", "late"):
        await harness.user(n)
    group = await harness.rest("owner").create_group("g", ["early"], group_id="joinseq")
    conv = group["conv"]
    owner = await harness.device("owner")
    for i in range(3):
        await owner.send(conv, f"before {i}")
    added = await harness.rest("owner").add_members("joinseq", ["late"])
    assert added == ["late"]
    await owner.send(conv, "after")
    late = await harness.device("late")
    page = await late.pull(conv, after=0)
    texts = [m.body.get("text") or m.body.get("event") for m in page.items]
    assert texts == ["members_added", "after"]
    assert page.min_seq == page.items[0].seq
    [summary] = await late.sync(0)
    assert summary.unread == 2  # the members_added notice and "after"
    assert summary.join_seq == page.min_seq - 1
