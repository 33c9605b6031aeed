"""A refused write changes nothing, over the WebSocket and over REST: after every refused send, operation and
forward, the target conversation's max seq, history and every member's conversation list are as before, and
no member's connection got a push (witness.py). Each refused request is sent once, so that an error that a
retry would hide (a retryable 500 before the refusal) fails the test."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from flare_im.protocol.errors import ErrorCode
from flare_im.sdk.client import FlareClient

from .conftest import Harness, ServerProcess
from .witness import Witness

Transport = Literal["ws", "rest"]
TRANSPORTS: tuple[Transport, ...] = ("ws", "rest")
DM = "d:alice:bob"


async def _users(harness: Harness, *names: str) -> dict[str, FlareClient]:
    for n in names:
        await harness.user(n)
    return {n: await harness.device(n) for n in names}


def _send(
    harness: Harness, clients: dict[str, FlareClient], transport: Transport, user: str, conv: str
) -> Awaitable[Any]:
    if transport == "ws":
        return clients[user].send(conv, "let me in", attempts=1)
    return harness.rest(user).send(conv, uuid.uuid4().hex, {"text": "let me in"})


def _op(
    harness: Harness,
    clients: dict[str, FlareClient],
    transport: Transport,
    user: str,
    conv: str,
    seq: int,
    op: str,
    **fields: Any,
) -> Awaitable[Any]:
    """Operation ``op`` on message ``seq``, sent once over ``transport``."""
    if transport == "ws":
        if op == "delete_for_me":
            return clients[user].delete_for_me(conv, seq, attempts=1)
        return clients[user].operate(conv, seq, op, attempts=1, **fields)
    body = {"op": op, "opid": uuid.uuid4().hex, **{k: v for k, v in fields.items() if v is not None}}
    return harness.rest(user).request("POST", f"/v1/conversations/{conv}/messages/{seq}/ops", json=body)


def _forward(
    harness: Harness,
    clients: dict[str, FlareClient],
    transport: Transport,
    user: str,
    conv: str,
    seqs: list[int],
    to: str,
) -> Awaitable[Any]:
    if transport == "ws":
        return clients[user].forward(conv, seqs, to, attempts=1)
    body = {"seqs": seqs, "to": to, "cmid": uuid.uuid4().hex}
    return harness.rest(user).request("POST", f"/v1/conversations/{conv}/forward", json=body)


async def test_a_send_by_a_non_member_is_not_stored(harness: Harness) -> None:
    clients = await _users(harness, "alice", "bob", "carol", "dave")
    conv = (await harness.rest("alice").create_group("team", ["bob", "carol"], group_id="team"))["conv"]
    await clients["bob"].send(conv, "members only")
    await harness.rest("carol").leave_group("team")

    team = await Witness.open(harness, conv, ["alice", "bob"], others=["carol", "dave"])
    for transport in TRANSPORTS:
        await team.refused(ErrorCode.FORBIDDEN, _send(harness, clients, transport, "dave", conv))  # never a member
        await team.refused(ErrorCode.FORBIDDEN, _send(harness, clients, transport, "carol", conv))  # left
        # A reply quoting a message of the group is refused the same way.
        reply = clients["dave"].reply(conv, 1, "me too", attempts=1)
        await team.refused(ErrorCode.FORBIDDEN, reply)

    # Someone else's direct conversation (a forged id).
    direct = await Witness.open(harness, DM, ["alice", "bob"], others=["dave"])
    for transport in TRANSPORTS:
        await direct.refused(ErrorCode.FORBIDDEN, _send(harness, clients, transport, "dave", DM))


async def test_refused_operations_change_nothing(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env_overrides={"FLARE_RECALL_WINDOW_S": "1"})
    srv.start()
    harness = Harness(srv)
    try:
        clients = await _users(harness, "alice", "bob", "carol", "dave")
        bob = clients["bob"]
        conv = (await harness.rest("alice").create_group("team", ["bob", "carol"], group_id="team"))["conv"]
        text = await bob.send(conv, "mine")
        image = await bob.send(conv, kind="image", body={"url": "https://cdn.example/p.png"})
        recalled = await bob.send(conv, "oops")
        await bob.recall(conv, recalled.seq)
        await bob.edit(conv, text.seq, "mine, edited", base_version=1)  # text is at version 2
        await clients["carol"].react(conv, text.seq, "👍")
        direct = await bob.send(DM, "to alice")
        # Past bob's recall window for his own messages (the owner may still recall them).
        await asyncio.sleep(max(0.0, text.ts / 1000 + 1.2 - time.time()))

        team = await Witness.open(harness, conv, ["alice", "bob", "carol"], others=["dave"])
        edit: dict[str, Any] = {"body": {"text": "changed"}}
        for transport in TRANSPORTS:

            def op(user: str, seq: int, name: str, transport: Transport = transport, **f: Any) -> Awaitable[Any]:
                return _op(harness, clients, transport, user, conv, seq, name, **f)

            cases: list[tuple[ErrorCode, Callable[[], Awaitable[Any]]]] = [
                # Not the sender, and not an owner or admin.
                (ErrorCode.FORBIDDEN, lambda: op("carol", text.seq, "recall")),
                (ErrorCode.FORBIDDEN, lambda: op("carol", text.seq, "delete")),
                (ErrorCode.FORBIDDEN, lambda: op("carol", text.seq, "edit", base_version=2, **edit)),
                (ErrorCode.FORBIDDEN, lambda: op("alice", text.seq, "edit", base_version=2, **edit)),  # owner
                # The sender, after the recall window.
                (ErrorCode.FORBIDDEN, lambda: op("bob", text.seq, "recall")),
                (ErrorCode.FORBIDDEN, lambda: op("bob", image.seq, "delete")),
                # Not a member.
                (ErrorCode.FORBIDDEN, lambda: op("dave", text.seq, "react", emoji="🎉")),
                (ErrorCode.FORBIDDEN, lambda: op("dave", text.seq, "delete_for_me")),
                # A stale version; a reaction already there, or not there.
                (ErrorCode.CONFLICT, lambda: op("bob", text.seq, "edit", base_version=1, **edit)),
                (ErrorCode.CONFLICT, lambda: op("carol", text.seq, "react", emoji="👍")),
                (ErrorCode.CONFLICT, lambda: op("bob", text.seq, "unreact", emoji="👍")),
                # No such message, or not one that can be changed (the group_created notice, an event).
                (ErrorCode.NOT_FOUND, lambda: op("bob", 999, "edit", base_version=1, **edit)),
                (ErrorCode.NOT_FOUND, lambda: op("alice", 999, "recall")),
                (ErrorCode.NOT_FOUND, lambda: op("carol", 999, "react", emoji="🎉")),
                (ErrorCode.NOT_FOUND, lambda: op("carol", 999, "delete_for_me")),
                (ErrorCode.NOT_FOUND, lambda: op("alice", 1, "delete")),
                (ErrorCode.NOT_FOUND, lambda: op("carol", recalled.seq + 1, "react", emoji="🎉")),
                # Recalled already; not a text message.
                (ErrorCode.GONE, lambda: op("bob", recalled.seq, "edit", base_version=2, **edit)),
                (ErrorCode.GONE, lambda: op("carol", recalled.seq, "react", emoji="🎉")),
                (ErrorCode.GONE, lambda: op("alice", recalled.seq, "delete")),
                (ErrorCode.INVALID, lambda: op("bob", image.seq, "edit", base_version=1, **edit)),
            ]
            for code, make in cases:
                await team.refused(code, make())

        # A direct conversation has no moderators: the peer may not recall, and the sender's window passed.
        pair = await Witness.open(harness, DM, ["alice", "bob"])
        for transport in TRANSPORTS:
            await pair.refused(ErrorCode.FORBIDDEN, _op(harness, clients, transport, "alice", DM, direct.seq, "recall"))
            await pair.refused(ErrorCode.FORBIDDEN, _op(harness, clients, transport, "bob", DM, direct.seq, "delete"))
    finally:
        await harness.close()
        srv.stop()


async def test_refused_forwards_change_nothing(harness: Harness) -> None:
    clients = await _users(harness, "alice", "bob", "carol", "dave")
    a = await clients["bob"].send(DM, "forward me")
    gone = await clients["bob"].send(DM, "recalled")
    await clients["bob"].recall(DM, gone.seq)
    secret = await clients["carol"].send("d:carol:dave", "not for alice")
    club = (await harness.rest("carol").create_group("club", ["dave"], group_id="club"))["conv"]

    # Into a conversation alice is in: from one she cannot read, or messages that cannot be forwarded.
    into_dm = await Witness.open(harness, DM, ["alice", "bob"])
    source = await Witness.open(harness, "d:carol:dave", ["carol", "dave"])
    for transport in TRANSPORTS:
        stolen = _forward(harness, clients, transport, "alice", "d:carol:dave", [secret.seq], DM)
        before = await source.snapshot()
        await into_dm.refused(ErrorCode.FORBIDDEN, stolen)
        await source.unchanged(before)
        await into_dm.refused(ErrorCode.NOT_FOUND, _forward(harness, clients, transport, "alice", DM, [999], DM))
        await into_dm.refused(ErrorCode.GONE, _forward(harness, clients, transport, "alice", DM, [gone.seq], DM))
        both = _forward(harness, clients, transport, "alice", DM, [a.seq, gone.seq], DM)
        await into_dm.refused(ErrorCode.GONE, both)

    # Into conversations alice is not in: someone else's direct conversation, a group.
    for conv, members in (("d:bob:carol", ["bob", "carol"]), (club, ["carol", "dave"])):
        target = await Witness.open(harness, conv, members, others=["alice"])
        for transport in TRANSPORTS:
            into = _forward(harness, clients, transport, "alice", DM, [a.seq], conv)
            await target.refused(ErrorCode.FORBIDDEN, into)


async def test_a_non_member_cannot_read_or_change_a_group_over_rest(harness: Harness) -> None:
    await _users(harness, "alice", "bob", "dave")
    conv = (await harness.rest("alice").create_group("team", ["bob"], group_id="team"))["conv"]
    team = await Witness.open(harness, conv, ["alice", "bob"], others=["dave"])
    dave, bob = harness.rest("dave"), harness.rest("bob")
    await team.refused(ErrorCode.FORBIDDEN, dave.group("team"))
    await team.refused(ErrorCode.FORBIDDEN, dave.group_members("team"))
    await team.refused(ErrorCode.FORBIDDEN, dave.update_group("team", name="mine now"))
    await team.refused(ErrorCode.FORBIDDEN, dave.add_members("team", ["dave"]))
    await team.refused(ErrorCode.FORBIDDEN, dave.history(conv))
    await team.refused(ErrorCode.FORBIDDEN, bob.update_group("team", name="a member is not an admin"))
    await team.refused(ErrorCode.FORBIDDEN, bob.remove_member("team", "alice"))
    await team.refused(ErrorCode.NOT_FOUND, dave.group("nosuchgroup"))
    assert (await bob.group("team"))["name"] == "team"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_read_position_changes_nothing(harness: Harness, transport: Transport) -> None:
    clients = await _users(harness, "alice", "bob", "carol")
    await clients["bob"].send(DM, "hi")
    pair = await Witness.open(harness, DM, ["alice", "bob"], others=["carol"])
    if transport == "ws":
        await pair.refused(ErrorCode.OUT_OF_RANGE, clients["alice"].read(DM, 99))
        await pair.refused(ErrorCode.FORBIDDEN, clients["carol"].read(DM, 1))
    else:
        rest = harness.rest
        await pair.refused(
            ErrorCode.OUT_OF_RANGE, rest("alice").request("POST", f"/v1/conversations/{DM}/read", json={"seq": 99})
        )
        await pair.refused(
            ErrorCode.FORBIDDEN, rest("carol").request("POST", f"/v1/conversations/{DM}/read", json={"seq": 1})
        )
