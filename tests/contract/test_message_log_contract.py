"""Contract of the MessageLog port (src/flare_im/backends/message_log/base.py), for every backend."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from typing import Any

import msgspec
import pytest

from flare_im.backends.message_log.base import ConvHead, MessageLog
from flare_im.ids import snowflake_floor
from flare_im.protocol.frames import Message

_msg_ids = itertools.count(1_000_000)

BEFORE_ALL = 2**63 - 1  # the largest seq: "no upper bound"


def mk(
    conv: str,
    seq: int,
    *,
    sender: str = "alice",
    cmid: str | None = None,
    ts: int | None = None,
    kind: str = "text",
    body: dict[str, Any] | None = None,
) -> Message:
    return Message(
        conv=conv,
        seq=seq,
        msg_id=str(next(_msg_ids)),
        sender=sender,
        cmid=cmid or f"{conv}-{seq}",
        kind=kind,
        body={"text": f"m{seq}"} if body is None else body,
        ts=1_700_000_000_000 + seq if ts is None else ts,
    )


async def append_all(log: MessageLog, messages: list[Message], first_version: int = 100) -> None:
    for i, m in enumerate(messages):
        await log.append(m, first_version + i)


async def raised(aw: Awaitable[Any]) -> BaseException:
    """The exception ``aw`` raises (the port says only that it raises, not what)."""
    try:
        await aw
    except Exception as exc:
        return exc
    pytest.fail("expected an exception")


def seqs(messages: list[Message]) -> list[int]:
    return [m.seq for m in messages]


# ---------------------------------------------------------------- append and range


async def test_append_then_range_returns_the_messages_ascending(message_log: MessageLog) -> None:
    body = {"text": "héllo ✓", "nested": {"a": [1, 2.5, None, True]}, "n": 2**53}
    msgs = [mk("g:one", s, body=body if s == 2 else None) for s in range(1, 6)]
    await append_all(message_log, msgs)

    got = await message_log.range("g:one", after=0, before=BEFORE_ALL, limit=100, newest=False)
    assert got == msgs  # every field round-trips, body included
    got_newest = await message_log.range("g:one", after=0, before=BEFORE_ALL, limit=100, newest=True)
    assert got_newest == msgs  # newest=True is still returned in ascending seq


async def test_range_of_unknown_conversation_is_empty(message_log: MessageLog) -> None:
    await append_all(message_log, [mk("g:one", 1)])
    assert await message_log.range("g:other", after=0, before=BEFORE_ALL, limit=10, newest=False) == []
    assert await message_log.range("g:other", after=0, before=BEFORE_ALL, limit=10, newest=True) == []


async def test_range_limit_takes_oldest_or_newest_but_always_ascending(message_log: MessageLog) -> None:
    await append_all(message_log, [mk("g:one", s) for s in range(1, 11)])

    oldest = await message_log.range("g:one", after=0, before=BEFORE_ALL, limit=3, newest=False)
    assert seqs(oldest) == [1, 2, 3]
    newest = await message_log.range("g:one", after=0, before=BEFORE_ALL, limit=3, newest=True)
    assert seqs(newest) == [8, 9, 10]


async def test_range_bounds_are_exclusive(message_log: MessageLog) -> None:
    await append_all(message_log, [mk("g:one", s) for s in range(1, 11)])

    async def rng(after: int, before: int, limit: int = 100, newest: bool = False) -> list[int]:
        return seqs(await message_log.range("g:one", after=after, before=before, limit=limit, newest=newest))

    assert await rng(3, 7) == [4, 5, 6]
    assert await rng(3, 7, newest=True) == [4, 5, 6]
    assert await rng(3, 7, limit=2) == [4, 5]
    assert await rng(3, 7, limit=2, newest=True) == [5, 6]
    assert await rng(0, 4) == [1, 2, 3]  # before: page older than seq 4
    assert await rng(7, BEFORE_ALL) == [8, 9, 10]  # after: what came since seq 7
    assert await rng(10, BEFORE_ALL) == []
    assert await rng(0, 1) == []
    assert await rng(4, 5) == []
    assert await rng(5, 5) == []


async def test_range_only_returns_the_requested_conversation(message_log: MessageLog) -> None:
    a = [mk("g:a", s) for s in range(1, 4)]
    b = [mk("g:b", s) for s in range(1, 3)]
    await append_all(message_log, [a[0], b[0], a[1], b[1], a[2]])
    assert await message_log.range("g:a", after=0, before=BEFORE_ALL, limit=10, newest=False) == a
    assert await message_log.range("g:b", after=0, before=BEFORE_ALL, limit=10, newest=True) == b


# ---------------------------------------------------------------- duplicate seq


async def test_duplicate_seq_raises_and_stores_nothing(message_log: MessageLog) -> None:
    first = mk("g:one", 1, cmid="first")
    await message_log.append(first, 10)
    dup = mk("g:one", 1, sender="bob", cmid="dup", body={"text": "other"}, ts=first.ts + 5)

    await raised(message_log.append(dup, 20))

    assert await message_log.range("g:one", after=0, before=BEFORE_ALL, limit=10, newest=False) == [first]
    assert await message_log.find_by_client_id("bob", "dup") is None
    assert await message_log.max_seq("g:one") == 1
    assert (await message_log.heads(["g:one"]))["g:one"] == ConvHead(conv="g:one", max_seq=1, version=10, last=first)
    assert await message_log.max_version() == 10


async def test_duplicate_seq_in_the_same_burst_fails_alone(message_log: MessageLog) -> None:
    # Appends are applied in call order: the first append of seq 1 wins, the second raises, others commit.
    one = mk("g:one", 1, cmid="one")
    one_again = mk("g:one", 1, cmid="one-again")
    two = mk("g:one", 2, cmid="two")
    results = await asyncio.gather(
        message_log.append(one, 1),
        message_log.append(one_again, 2),
        message_log.append(two, 3),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], Exception)
    assert results[2] is None
    assert await message_log.range("g:one", after=0, before=BEFORE_ALL, limit=10, newest=False) == [one, two]
    assert await message_log.find_by_client_id("alice", "one-again") is None


# ---------------------------------------------------------------- heads, max_seq, max_version


async def test_heads_hold_max_seq_version_and_last_message(message_log: MessageLog) -> None:
    a = [mk("g:a", s) for s in range(1, 4)]
    b = [mk("d:x:y", 1, sender="x")]
    await message_log.append(a[0], 10)
    await message_log.append(b[0], 11)
    await message_log.append(a[1], 12)
    await message_log.append(a[2], 13)

    heads = await message_log.heads(["g:a", "d:x:y", "g:empty"])
    assert set(heads) == {"g:a", "d:x:y"}  # conversations with no message are absent
    assert heads["g:a"] == ConvHead(conv="g:a", max_seq=3, version=13, last=a[2])
    assert heads["d:x:y"] == ConvHead(conv="d:x:y", max_seq=1, version=11, last=b[0])
    assert await message_log.heads([]) == {}
    assert await message_log.heads(["g:empty"]) == {}


async def test_heads_of_many_conversations(message_log: MessageLog) -> None:
    names = [f"g:c{i}" for i in range(1200)]
    stored = {names[0]: mk(names[0], 1), names[700]: mk(names[700], 1), names[1199]: mk(names[1199], 1)}
    for i, m in enumerate(stored.values()):
        await message_log.append(m, 50 + i)

    heads = await message_log.heads(names)
    assert set(heads) == set(stored)
    for conv, m in stored.items():
        assert heads[conv].last == m
        assert heads[conv].max_seq == 1


async def test_max_seq(message_log: MessageLog) -> None:
    assert await message_log.max_seq("g:one") == 0
    await append_all(message_log, [mk("g:one", s) for s in range(1, 8)] + [mk("g:two", 1)])
    assert await message_log.max_seq("g:one") == 7
    assert await message_log.max_seq("g:two") == 1
    assert await message_log.max_seq("g:three") == 0


async def test_max_version_is_the_largest_stored(message_log: MessageLog) -> None:
    assert await message_log.max_version() == 0
    await message_log.append(mk("g:a", 1), 5)
    assert await message_log.max_version() == 5
    await message_log.append(mk("g:b", 1), 9)
    await message_log.append(mk("g:a", 2), 7)
    assert await message_log.max_version() == 9


# ---------------------------------------------------------------- idempotency lookups


async def test_find_by_client_id(message_log: MessageLog) -> None:
    mine = mk("g:one", 1, sender="alice", cmid="c-1")
    theirs = mk("g:one", 2, sender="bob", cmid="c-2")
    other_conv = mk("d:alice:bob", 1, sender="alice", cmid="c-3")
    await append_all(message_log, [mine, theirs, other_conv])

    assert await message_log.find_by_client_id("alice", "c-1") == mine
    assert await message_log.find_by_client_id("bob", "c-2") == theirs
    assert await message_log.find_by_client_id("alice", "c-3") == other_conv
    assert await message_log.find_by_client_id("bob", "c-1") is None  # the key is (sender, cmid)
    assert await message_log.find_by_client_id("alice", "c-2") is None
    assert await message_log.find_by_client_id("alice", "nope") is None


async def test_recent_client_ids_newest_first_since_and_limit(message_log: MessageLog) -> None:
    base = 1_800_000_000_000

    def at(conv: str, seq: int, ts: int) -> Message:  # ids are snowflakes generated at ``ts``
        return msgspec.structs.replace(mk(conv, seq, ts=ts), msg_id=str(snowflake_floor(ts) + seq))

    msgs = [at("g:a", 1, base + 1000), at("g:b", 1, base + 2000), at("g:a", 2, base + 3000), at("g:c", 1, base + 4000)]
    await append_all(message_log, msgs)

    def keys(ms: list[Message]) -> list[tuple[str, str]]:
        return [(m.sender, m.cmid) for m in ms]

    assert await message_log.recent_client_ids(base + 2000, 10) == keys([msgs[3], msgs[2], msgs[1]])  # inclusive
    assert await message_log.recent_client_ids(base, 10) == keys(msgs[::-1])
    assert await message_log.recent_client_ids(base, 2) == keys([msgs[3], msgs[2]])
    assert await message_log.recent_client_ids(base + 4001, 10) == []


# ---------------------------------------------------------------- concurrency and durability


async def test_concurrent_appends_are_all_durable_and_group_committed(message_log_backend: Any) -> None:
    log: MessageLog = await message_log_backend.open()
    convs = [f"g:c{i}" for i in range(4)]
    per_conv = 50
    msgs = [mk(conv, s, cmid=f"{conv}-{s}") for s in range(1, per_conv + 1) for conv in convs]
    commits_before = message_log_backend.commits(log)

    await asyncio.gather(*(log.append(m, 1000 + i) for i, m in enumerate(msgs)))

    for conv in convs:
        expected = [m for m in msgs if m.conv == conv]
        assert await log.range(conv, after=0, before=BEFORE_ALL, limit=500, newest=False) == expected
        assert await log.max_seq(conv) == per_conv
    heads = await log.heads(convs)
    assert all(heads[c].max_seq == per_conv and heads[c].last == msgs[-len(convs) + i] for i, c in enumerate(convs))
    assert await log.max_version() == 1000 + len(msgs) - 1

    commits_after = message_log_backend.commits(log)
    if commits_after is not None:
        assert commits_after - commits_before < len(msgs), "appends were not group-committed"

    # Durable: another client over the same storage sees every append without the first being closed.
    other: MessageLog = await message_log_backend.open()
    for conv in convs:
        assert len(await other.range(conv, after=0, before=BEFORE_ALL, limit=500, newest=False)) == per_conv


async def test_appends_survive_close_and_reopen(message_log_backend: Any) -> None:
    log: MessageLog = await message_log_backend.open()
    msgs = [mk("g:one", s) for s in range(1, 6)] + [mk("d:a:b", 1, sender="a", cmid="k")]
    await append_all(log, msgs, first_version=300)
    await message_log_backend.close(log)

    reopened: MessageLog = await message_log_backend.open()
    assert await reopened.range("g:one", after=0, before=BEFORE_ALL, limit=10, newest=False) == msgs[:5]
    assert await reopened.max_seq("g:one") == 5
    assert await reopened.max_version() == 305
    assert await reopened.find_by_client_id("a", "k") == msgs[5]
    heads = await reopened.heads(["g:one", "d:a:b"])
    assert heads["g:one"] == ConvHead(conv="g:one", max_seq=5, version=304, last=msgs[4])
    assert heads["d:a:b"] == ConvHead(conv="d:a:b", max_seq=1, version=305, last=msgs[5])

    # and the reopened log keeps appending after what was stored
    nxt = mk("g:one", 6)
    await reopened.append(nxt, 306)
    assert (await reopened.range("g:one", after=5, before=BEFORE_ALL, limit=10, newest=False)) == [nxt]
    await raised(reopened.append(mk("g:one", 3, cmid="again"), 307))
