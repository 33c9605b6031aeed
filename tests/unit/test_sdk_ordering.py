"""The SDK's per-conversation ordering: duplicates dropped by seq, a gap pulled before later messages."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from flare_im.protocol.frames import Message, Messages, msg_from_message
from flare_im.sdk.client import FlareClient


def message(seq: int, conv: str = "d:a:b", sender: str = "b") -> Message:
    return Message(conv, seq, str(1000 + seq), sender, f"c{seq}", "text", {"text": f"m{seq}"}, 1)


def push(client: FlareClient, seq: int) -> None:
    client._on_data(msgspec.json.encode(msg_from_message(message(seq))))


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> tuple[FlareClient, list[tuple[int | None, int]]]:
    c = FlareClient("ws://unused", "token", "d1", reconnect=False)
    server_log = {s: message(s) for s in range(1, 11)}
    pulls: list[tuple[int | None, int]] = []

    async def fake_pull(conv: str, *, after: int | None = None, before: int | None = None, limit: int = 50) -> Messages:
        pulls.append((after, limit))
        start = (after or 0) + 1
        items = [server_log[s] for s in range(start, min(start + limit, 11))]
        return Messages(id=0, conv=conv, items=items, max_seq=10, min_seq=1, more=bool(items) and items[-1].seq < 10)

    monkeypatch.setattr(c, "pull", fake_pull)
    return c, pulls


async def test_in_order_pushes_are_yielded_once(client: tuple[FlareClient, list[tuple[int | None, int]]]) -> None:
    c, pulls = client
    for seq in (1, 2, 2, 1, 3):  # duplicates are ignored
        push(c, seq)
    got = [(await c.next_message(1)).seq for _ in range(3)]
    assert got == [1, 2, 3]
    assert c.pending_messages() == 0
    assert pulls == []
    assert c.local_max_seq("d:a:b") == 3


async def test_a_gap_is_pulled_before_later_messages(client: tuple[FlareClient, list[tuple[int | None, int]]]) -> None:
    c, pulls = client
    push(c, 1)
    push(c, 5)  # 2..4 missing: pull them
    got = [(await c.next_message(1)).seq for _ in range(10)]
    assert got == list(range(1, 11))  # the pull also brought 6..10, in order, once each
    assert pulls[0][0] == 1
    push(c, 7)  # a late push of something already pulled is a duplicate
    await asyncio.sleep(0.05)
    assert c.pending_messages() == 0


async def test_own_acked_messages_are_not_yielded(client: tuple[FlareClient, list[tuple[int | None, int]]]) -> None:
    c, _ = client
    push(c, 1)
    c._seen("d:a:b", 2, None)  # this client sent seq 2 (its ack)
    push(c, 3)
    got = [(await c.next_message(1)).seq for _ in range(2)]
    assert got == [1, 3]
    assert c.local_max_seq("d:a:b") == 3
