"""Checks that look at what the server stored and what it sent on the wire, not at what the SDK shows.

``Witness`` proves that a refused request changed nothing in one conversation. Before the request it takes
a ``Snapshot``: the conversation's max seq and history as a member pulls them, and the conversation list
(``sync``, with max_seq, read_seq, unread and versions) of every member and of any other user named. After
it, the snapshot must be the same, and no push may have reached a member: each member has a raw WebSocket,
and a legitimate message sent afterwards over REST (the barrier) must be the next frame on every one of
them. A push caused by the refused request would have been queued before the barrier's.

``Wire`` records every frame one ``FlareClient`` receives (its ``on_frame`` hook), repeated pushes
included: the client's message stream drops a repeated seq, so "pushed once" is counted here.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import Message, Msg, ServerFrame
from flare_im.sdk.client import FlareClient

from .conftest import Harness, RawWs, raw_authed

_devices = itertools.count(1)
BARRIER = "barrier-"  # the cmid prefix of barrier messages


def barrier_cmid() -> str:
    return f"{BARRIER}{uuid.uuid4().hex}"


async def next_message(client: FlareClient) -> Message:
    """The client's next message that is not a barrier."""
    while True:
        message = await client.next_message()
        if not message.cmid.startswith(BARRIER):
            return message


@dataclass(frozen=True)
class Snapshot:
    """One conversation as its members see it."""

    max_seq: int
    history: list[dict[str, Any]]  # every readable message, in its current state
    lists: dict[str, list[dict[str, Any]]]  # user -> that user's whole conversation list

    def differences(self, other: Snapshot) -> list[str]:
        out = []
        if self.max_seq != other.max_seq:
            out.append(f"max_seq {self.max_seq} -> {other.max_seq}")
        if self.history != other.history:
            out.append(f"history {self.history} -> {other.history}")
        for user, items in self.lists.items():
            if other.lists.get(user) != items:
                out.append(f"{user}'s conversation list {items} -> {other.lists.get(user)}")
        return out


class Witness:
    """Watches ``conv`` for a test: its ``members`` (the first one reads the history and sends the
    barriers) each get a raw WebSocket; ``others`` (e.g. the refused user) only have their list compared."""

    def __init__(
        self, harness: Harness, conv: str, members: Sequence[str], others: Sequence[str], sockets: dict[str, RawWs]
    ) -> None:
        self.harness = harness
        self.conv = conv
        self.members = list(members)
        self.others = list(others)
        self.sockets = sockets
        self.last_barrier = 0  # the seq of the latest barrier message

    @classmethod
    async def open(cls, harness: Harness, conv: str, members: Sequence[str], *, others: Sequence[str] = ()) -> Witness:
        sockets = {
            m: await raw_authed(harness.srv, harness.tokens[m], device=f"witness-{next(_devices)}") for m in members
        }
        return cls(harness, conv, members, others, sockets)

    async def snapshot(self) -> Snapshot:
        page = await self.harness.rest(self.members[0]).history(self.conv, limit=500)
        assert not page["more"], "a witnessed conversation is kept under 500 messages"
        lists = {}
        for user in (*self.members, *self.others):
            listing = await self.harness.rest(user).conversations(limit=500)
            assert not listing["more"]
            lists[user] = listing["items"]
        return Snapshot(page["max_seq"], page["items"], lists)

    async def barrier(self, *, skip_earlier: bool = False) -> int:
        """Send a message into the conversation over REST (every member's device gets it) and read it on each
        member's socket; it must be the next frame there unless ``skip_earlier`` (after legitimate changes
        whose pushes the test does not count). Returns its seq."""
        ack = await self.harness.rest(self.members[0]).send(self.conv, barrier_cmid(), {"text": "."})
        for user, ws in self.sockets.items():
            while True:
                frame = await ws.recv_json()
                if (frame["type"], frame.get("conv"), frame.get("seq")) == ("msg", self.conv, ack["seq"]):
                    break
                if frame.get("seq", 0) <= self.last_barrier and frame.get("cmid", "").startswith(BARRIER):
                    raise AssertionError(f"{user} got the push of an earlier barrier again: {frame}")
                assert skip_earlier, f"a push reached {user} after a refused request: {frame}"
        self.last_barrier = int(ack["seq"])
        return self.last_barrier

    async def unchanged(self, before: Snapshot) -> None:
        """Fails unless the conversation is as in ``before`` and no push reached a member since."""
        after = await self.snapshot()
        changes = before.differences(after)
        assert not changes, "a refused request changed the conversation: " + "; ".join(changes)
        await self.barrier()

    async def refused(self, code: ErrorCode, call: Awaitable[Any]) -> FlareError:
        """Await ``call`` (sent once: pass ``attempts=1`` to SDK calls that retry), expect error ``code``, and
        check that it changed nothing. Returns the error."""
        before = await self.snapshot()
        try:
            result = await call
        except FlareError as exc:
            error = exc
        else:
            raise AssertionError(f"expected error {int(code)}, got {result!r}")
        assert error.code == code, f"expected error {int(code)}, got {int(error.code)}: {error.message}"
        await self.unchanged(before)
        return error


class Wire:
    """Every frame one ``FlareClient`` received, in arrival order: pass it as ``on_frame``."""

    def __init__(self) -> None:
        self.frames: list[ServerFrame] = []
        self._arrived = asyncio.Event()

    def __call__(self, frame: ServerFrame) -> None:
        self.frames.append(frame)
        self._arrived.set()

    def seqs(self, conv: str) -> list[int]:
        """The seqs of the ``msg`` pushes of ``conv`` received, repeats included."""
        return [f.seq for f in self.frames if isinstance(f, Msg) and f.conv == conv]

    async def until(self, conv: str, seq: int, timeout: float = 5.0) -> None:
        """Wait for the push of ``seq`` in ``conv``."""
        async with asyncio.timeout(timeout):
            while seq not in self.seqs(conv):
                self._arrived.clear()
                await self._arrived.wait()


async def rest_barrier(harness: Harness, conv: str, sender: str, *wires: Wire) -> int:
    """Send a message over REST as ``sender`` (so all of ``sender``'s devices get it too) and wait until each
    wire has received it: every push queued before it has arrived. Returns its seq."""
    ack = await harness.rest(sender).send(conv, barrier_cmid(), {"text": "."})
    for wire in wires:
        await wire.until(conv, ack["seq"])
    return int(ack["seq"])
