"""Contract of the MessageLog port (src/flare_im/backends/message_log/base.py), for every backend."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from typing import Any

import msgspec
import pytest

from flare_im.backends.message_log.base import Change, ConvHead, MessageLog, Revision, VersionConflict
from flare_im.ids import now_ms, snowflake_floor
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


def mk_at(conv: str, seq: int, ts: int, **kw: Any) -> Message:
    """``mk`` with a msg_id that is a snowflake generated at ``ts``, as the server makes them."""
    return msgspec.structs.replace(mk(conv, seq, ts=ts, **kw), msg_id=str(snowflake_floor(ts) + seq))


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
    body = {"text": "héllo ✓", "nested": {"a": [1, 2.5, None, True]}, "n": 2**53 - 1}  # the largest a body holds
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
    assert await message_log.find_by_client_id("bob", "dup", since_ms=0) is None
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
    assert await message_log.find_by_client_id("alice", "one-again", since_ms=0) is None


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

    assert await message_log.find_by_client_id("alice", "c-1", since_ms=0) == mine
    assert await message_log.find_by_client_id("bob", "c-2", since_ms=0) == theirs
    assert await message_log.find_by_client_id("alice", "c-3", since_ms=0) == other_conv
    assert await message_log.find_by_client_id("bob", "c-1", since_ms=0) is None  # the key is (sender, cmid)
    assert await message_log.find_by_client_id("alice", "c-2", since_ms=0) is None
    assert await message_log.find_by_client_id("alice", "nope", since_ms=0) is None


async def test_find_by_client_id_looks_from_since_ms(message_log: MessageLog) -> None:
    """Callers look within the idempotency window: a key stored before ``since_ms`` is not found from there."""
    now = now_ms()

    def at(seq: int, ts: int, cmid: str) -> Message:
        return mk_at("g:w", seq, ts, cmid=cmid)

    old, recent, newest = at(1, now - 7_200_000, "old"), at(2, now - 290_000, "recent"), at(3, now - 1, "newest")
    again = at(4, now - 100_000, "old")  # the old key used again, inside the window
    await append_all(message_log, [old, recent, newest, again])

    window = now - 300_000
    assert await message_log.find_by_client_id("alice", "recent", since_ms=window) == recent
    assert await message_log.find_by_client_id("alice", "newest", since_ms=window) == newest
    assert await message_log.find_by_client_id("alice", "old", since_ms=window) == again  # not the one before
    assert await message_log.find_by_client_id("alice", "old", since_ms=now - 8_000_000) == old  # the first
    assert await message_log.find_by_client_id("alice", "recent", since_ms=now - 280_000) is None
    assert await message_log.find_by_client_id("bob", "recent", since_ms=window) is None


async def test_recent_client_ids_newest_first_since_and_limit(message_log: MessageLog) -> None:
    base = 1_800_000_000_000

    msgs = [mk_at("g:a", 1, base + 1000), mk_at("g:b", 1, base + 2000), mk_at("g:a", 2, base + 3000),
            mk_at("g:c", 1, base + 4000)]  # fmt: skip
    await append_all(message_log, msgs)

    def keys(ms: list[Message]) -> list[tuple[str, str]]:
        return [(m.sender, m.cmid) for m in ms]

    assert await message_log.recent_client_ids(base + 2000, 10) == keys([msgs[3], msgs[2], msgs[1]])  # inclusive
    assert await message_log.recent_client_ids(base, 10) == keys(msgs[::-1])
    assert await message_log.recent_client_ids(base, 2) == keys([msgs[3], msgs[2]])
    assert await message_log.recent_client_ids(base + 4001, 10) == []


async def test_any_text_round_trips(message_log: MessageLog) -> None:
    # Conversation ids, senders and client ids are caller-given text: quotes, backslashes, control characters.
    conv = "g:o'brien\\'; --\n\t\"✓\"\x00"
    sender, cmid = "bo'b\\", "c'1\\'\x00"
    m = mk(conv, 1, sender=sender, cmid=cmid, body={"text": 'it\'s \\ "quoted"\n\x00', "k'\\": ["\u2028"]})
    await message_log.append(m, 10)

    assert await message_log.get(conv, [1]) == [m]
    assert await message_log.range(conv, after=0, before=BEFORE_ALL, limit=10, newest=True) == [m]
    assert await message_log.find_by_client_id(sender, cmid, since_ms=0) == m
    assert await message_log.find_by_client_id(sender, "c'1", since_ms=0) is None
    assert (await message_log.heads([conv, "g:o"]))[conv].last == m
    assert await message_log.max_seq(conv) == 1
    assert await message_log.max_seq("g:o'brien") == 0
    assert await message_log.recent_client_ids(0, 10) == [(sender, cmid)]


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
    assert await reopened.find_by_client_id("a", "k", since_ms=0) == msgs[5]
    heads = await reopened.heads(["g:one", "d:a:b"])
    assert heads["g:one"] == ConvHead(conv="g:one", max_seq=5, version=304, last=msgs[4])
    assert heads["d:a:b"] == ConvHead(conv="d:a:b", max_seq=1, version=305, last=msgs[5])

    # and the reopened log keeps appending after what was stored
    nxt = mk("g:one", 6)
    await reopened.append(nxt, 306)
    assert (await reopened.range("g:one", after=5, before=BEFORE_ALL, limit=10, newest=False)) == [nxt]
    await raised(reopened.append(mk("g:one", 3, cmid="again"), 307))


# ---------------------------------------------------------------- operations: helpers

T_EDIT = 1_750_000_000_000  # edit times, after every ``mk`` ts
_op_ids = itertools.count(1)  # operation events get their own client ids (the op id)


def edit_op(target: Message, seq: int, body: dict[str, Any], *, version: int, edited_at: int) -> tuple[Message, Change]:
    """An edit event at ``seq`` (as the service builds it) and the change it makes to ``target``."""
    refs = {"target": target.seq, "target_id": target.msg_id, "version": version}
    event = mk(
        target.conv, seq, sender=target.sender, cmid=f"op-{next(_op_ids)}", kind="edit", body={**refs, "body": body}
    )
    return event, Change(target=target.seq, version=version, body=body, edited_at=edited_at)


def gone_op(target: Message, seq: int, state: str, *, version: int) -> tuple[Message, Change]:
    """A recall ("recalled") or delete-for-everyone ("deleted") event and its change."""
    refs = {"target": target.seq, "target_id": target.msg_id, "version": version}
    kind = "recall" if state == "recalled" else "delete"
    event = mk(target.conv, seq, cmid=f"op-{next(_op_ids)}", kind=kind, body=refs)
    return event, Change(target=target.seq, version=version, state=state)


def reaction_op(
    target: Message, seq: int, emoji: str, user: str, added: bool, *, version: int
) -> tuple[Message, Change]:
    body = {"target": target.seq, "target_id": target.msg_id, "emoji": emoji}
    event = mk(
        target.conv, seq, sender=user, cmid=f"op-{next(_op_ids)}", kind="react" if added else "unreact", body=body
    )
    return event, Change(target=target.seq, version=version, reaction=(emoji, user, added))


def quote(m: Message, snippet: str) -> dict[str, Any]:
    """The reply_to snapshot a reply carries of ``m``."""
    return {"seq": m.seq, "msg_id": m.msg_id, "sender": m.sender, "kind": m.kind, "snippet": snippet}


async def one(log: MessageLog, conv: str, seq: int) -> Message:
    found = await log.get(conv, [seq])
    assert len(found) == 1, f"{conv}#{seq} is not stored"
    return found[0]


async def everything(log: MessageLog, conv: str) -> list[Message]:
    return await log.range(conv, after=0, before=BEFORE_ALL, limit=10_000, newest=False)


async def snapshot(log: MessageLog, conv: str) -> tuple[Any, ...]:
    """All the port serves about ``conv``: to check that a failed operation wrote nothing."""
    messages = await everything(log, conv)
    history = {m.seq: await log.revisions(conv, m.seq) for m in messages}
    return messages, history, await log.heads([conv]), await log.max_seq(conv), await log.max_version()


async def served_text(log: MessageLog, conv: str) -> str:
    """Every message and every revision of ``conv`` as JSON: what any reader of the port can see."""
    messages = await everything(log, conv)
    history = [await log.revisions(conv, m.seq) for m in messages]
    return msgspec.json.encode([messages, history]).decode()


# ---------------------------------------------------------------- operations: edit


async def test_edit_stores_the_event_and_replaces_the_target_body(message_log: MessageLog) -> None:
    m1 = mk("g:one", 1, body={"text": "first draft", "mentions": ["bob"]})
    await message_log.append(m1, 10)
    new_body = {"text": "second draft"}
    e2, change = edit_op(m1, 2, new_body, version=2, edited_at=T_EDIT)

    await message_log.apply(e2, change, 11)

    edited = msgspec.structs.replace(m1, body=new_body, version=2, edited_at=T_EDIT)
    assert await everything(message_log, "g:one") == [edited, e2]  # the event is stored as given, at its seq
    assert await message_log.get("g:one", [1, 2]) == [edited, e2]
    assert (
        await message_log.find_by_client_id(e2.sender, e2.cmid, since_ms=0) == e2
    )  # an op's id is an idempotency key too
    assert await message_log.revisions("g:one", 1) == [Revision(version=1, body=m1.body, ts=m1.ts)]
    assert await message_log.revisions("g:one", 2) == []
    assert await message_log.revisions("g:one", 99) == []


async def test_several_edits_keep_every_earlier_version_in_order(message_log: MessageLog) -> None:
    m1 = mk("g:one", 1, body={"text": "v1"})
    await message_log.append(m1, 10)
    await message_log.append(mk("g:one", 2), 11)
    seq, version = 3, 12
    for n in (2, 3, 4):
        await message_log.apply(*edit_op(m1, seq, {"text": f"v{n}"}, version=n, edited_at=T_EDIT + n), version)
        await message_log.append(mk("g:one", seq + 1), version + 1)  # other messages in between
        seq, version = seq + 2, version + 2

    assert await message_log.revisions("g:one", 1) == [
        Revision(version=1, body={"text": "v1"}, ts=m1.ts),  # version 1 was written when the message was sent
        Revision(version=2, body={"text": "v2"}, ts=T_EDIT + 2),  # later ones when their edit was
        Revision(version=3, body={"text": "v3"}, ts=T_EDIT + 3),
    ]
    current = await one(message_log, "g:one", 1)
    assert (current.body, current.version, current.edited_at) == ({"text": "v4"}, 4, T_EDIT + 4)
    assert seqs(await everything(message_log, "g:one")) == list(range(1, 9))


# ---------------------------------------------------------------- operations: failures write nothing


async def _edited_once(log: MessageLog) -> Message:
    """g:one with message 1 edited to version 2 (seq 2) and message 3 after it; returns message 1 as sent."""
    m1 = mk("g:one", 1, body={"text": "v1"})
    await log.append(m1, 10)
    await log.apply(*edit_op(m1, 2, {"text": "v2"}, version=2, edited_at=T_EDIT), 11)
    await log.append(mk("g:one", 3), 12)
    return m1


@pytest.mark.parametrize("kind", ["edit", "recalled", "deleted"])
@pytest.mark.parametrize("version", [1, 2, 4], ids=["stale", "same", "ahead"])
async def test_content_change_needs_the_next_version_else_conflicts_and_writes_nothing(
    message_log: MessageLog, kind: str, version: int
) -> None:
    m1 = await _edited_once(message_log)  # message 1 is at version 2: only version 3 is accepted
    await message_log.apply(*reaction_op(m1, 4, "👍", "bob", True, version=2), 13)
    stored = await one(message_log, "g:one", 1)
    before = await snapshot(message_log, "g:one")
    if kind == "edit":
        event, change = edit_op(m1, 5, {"text": "lost"}, version=version, edited_at=T_EDIT + 9)
    else:
        event, change = gone_op(m1, 5, kind, version=version)

    with pytest.raises(VersionConflict) as conflict:
        await message_log.apply(event, change, 14)

    assert conflict.value.current == stored  # the target as stored, so the caller can resolve
    assert await snapshot(message_log, "g:one") == before  # no event, no head move, target untouched
    assert await message_log.find_by_client_id(event.sender, event.cmid, since_ms=0) is None
    # The seq is still free and the right version applies.
    if kind == "edit":
        event, change = edit_op(m1, 5, {"text": "v3"}, version=3, edited_at=T_EDIT + 9)
    else:
        event, change = gone_op(m1, 5, kind, version=3)
    await message_log.apply(event, change, 15)
    assert (await one(message_log, "g:one", 1)).version == 3
    assert await message_log.get("g:one", [5]) == [event]


@pytest.mark.parametrize("kind", ["edit", "recalled", "reaction"])
async def test_missing_target_raises_lookup_error_and_writes_nothing(message_log: MessageLog, kind: str) -> None:
    await append_all(message_log, [mk("g:one", 1), mk("g:one", 2)], first_version=10)
    elsewhere = mk("g:other", 5)
    await message_log.append(elsewhere, 12)  # seq 5 exists, but in another conversation
    ghost = mk("g:one", 5)  # never stored
    before = await snapshot(message_log, "g:one")
    before_other = await snapshot(message_log, "g:other")
    if kind == "edit":
        event, change = edit_op(ghost, 3, {"text": "x"}, version=2, edited_at=T_EDIT)
    elif kind == "recalled":
        event, change = gone_op(ghost, 3, kind, version=2)
    else:
        event, change = reaction_op(ghost, 3, "👍", "bob", True, version=1)

    with pytest.raises(LookupError):
        await message_log.apply(event, change, 13)

    assert await snapshot(message_log, "g:one") == before
    assert await snapshot(message_log, "g:other") == before_other
    assert await message_log.find_by_client_id(event.sender, event.cmid, since_ms=0) is None


async def test_failed_applies_do_not_break_appends_queued_around_them(message_log: MessageLog) -> None:
    m1 = mk("g:one", 1)
    await message_log.append(m1, 10)
    m2, m4, m6 = mk("g:one", 2), mk("g:one", 4), mk("g:one", 6)
    stale = edit_op(m1, 3, {"text": "x"}, version=5, edited_at=T_EDIT)
    missing = reaction_op(mk("g:one", 40), 5, "👍", "bob", True, version=1)
    others = [mk("g:two", s) for s in range(1, 4)]

    results = await asyncio.gather(
        message_log.append(m2, 11),
        message_log.append(others[0], 12),
        message_log.apply(*stale, 13),
        message_log.append(m4, 14),
        message_log.append(others[1], 15),
        message_log.apply(*missing, 16),
        message_log.append(m6, 17),
        message_log.append(others[2], 18),
        return_exceptions=True,
    )

    expected: list[type[Exception] | None] = [None, None, VersionConflict, None, None, LookupError, None, None]
    for result, kind in zip(results, expected, strict=True):
        assert result is None if kind is None else isinstance(result, kind), results
    assert await everything(message_log, "g:one") == [m1, m2, m4, m6]
    assert await everything(message_log, "g:two") == others
    heads = await message_log.heads(["g:one", "g:two"])
    assert heads["g:one"] == ConvHead(conv="g:one", max_seq=6, version=17, last=m6)
    assert heads["g:two"] == ConvHead(conv="g:two", max_seq=3, version=18, last=others[2])
    # and the log keeps applying
    e7, change = edit_op(m1, 7, {"text": "fine"}, version=2, edited_at=T_EDIT)
    await message_log.apply(e7, change, 19)
    assert (await one(message_log, "g:one", 1)).body == {"text": "fine"}


# ---------------------------------------------------------------- operations: recall and delete


@pytest.mark.parametrize("state", ["recalled", "deleted"])
async def test_recall_or_delete_leaves_a_marker_without_content(message_log: MessageLog, state: str) -> None:
    m1 = mk("g:one", 1, body={"text": "secret v1"})
    await message_log.append(m1, 10)
    e2, change = edit_op(m1, 2, {"text": "secret v2"}, version=2, edited_at=T_EDIT)
    await message_log.apply(e2, change, 11)
    e3, change = edit_op(m1, 3, {"text": "secret v3"}, version=3, edited_at=T_EDIT + 1)
    await message_log.apply(e3, change, 12)
    await message_log.apply(*reaction_op(m1, 4, "👍", "bob", True, version=3), 13)
    other = mk("g:one", 5, body={"text": "unrelated"})
    await message_log.append(other, 14)
    e6, change = edit_op(other, 6, {"text": "unrelated, edited"}, version=2, edited_at=T_EDIT + 2)
    await message_log.apply(e6, change, 15)

    e7, change = gone_op(m1, 7, state, version=4)
    await message_log.apply(e7, change, 16)

    target = await one(message_log, "g:one", 1)
    assert (target.state, target.body, target.version, target.reactions) == (state, {}, 4, {})
    assert (target.msg_id, target.sender, target.cmid, target.kind, target.ts) == (
        m1.msg_id,
        m1.sender,
        m1.cmid,
        m1.kind,
        m1.ts,
    )
    assert await message_log.revisions("g:one", 1) == []
    # Earlier edit events of it keep only their references; the event itself is stored as given.
    for event in (e2, e3):
        assert await one(message_log, "g:one", event.seq) == msgspec.structs.replace(
            event, body={"target": 1, "target_id": m1.msg_id, "version": event.body["version"]}
        )
    assert await one(message_log, "g:one", 7) == e7
    assert "secret" not in await served_text(message_log, "g:one")
    # Other messages and their edit history are untouched.
    assert await one(message_log, "g:one", 6) == e6
    assert (await one(message_log, "g:one", 5)).body == {"text": "unrelated, edited"}
    assert await message_log.revisions("g:one", 5) == [Revision(version=1, body=other.body, ts=other.ts)]


async def test_recall_turns_quotes_of_the_message_in_replies_into_markers(message_log: MessageLog) -> None:
    m1 = mk("g:one", 1, body={"text": "secret"})
    m2 = mk("g:one", 2, body={"text": "kept"})
    reply = mk("g:one", 3, sender="bob", body={"text": "re", "reply_to": quote(m1, "secret")})
    reply_other = mk("g:one", 4, sender="bob", body={"text": "re 2", "reply_to": quote(m2, "kept")})
    # The same seq quoted in another conversation is another message.
    elsewhere_quoted = mk("g:two", 1, body={"text": "secret elsewhere"})
    elsewhere = mk("g:two", 2, body={"text": "re", "reply_to": quote(elsewhere_quoted, "secret elsewhere")})
    await append_all(message_log, [m1, m2, reply, reply_other, elsewhere_quoted, elsewhere])

    await message_log.apply(*gone_op(m1, 5, "recalled", version=2), 200)

    marker = {"seq": 1, "msg_id": m1.msg_id, "sender": m1.sender, "kind": "text", "state": "recalled"}
    assert await one(message_log, "g:one", 3) == msgspec.structs.replace(reply, body={"text": "re", "reply_to": marker})
    assert await one(message_log, "g:one", 4) == reply_other
    assert await everything(message_log, "g:two") == [elsewhere_quoted, elsewhere]
    assert "secret" not in await served_text(message_log, "g:one")


async def test_recall_removes_the_quoted_text_from_an_edited_reply_too(message_log: MessageLog) -> None:
    # An edit of a reply keeps its quote (the service copies reply_to into the new body), so the quote is
    # also in the reply's earlier versions and in its edit event. A recall must reach those too, or the
    # recalled text stays readable through revisions() and range().
    m1 = mk("g:one", 1, body={"text": "secret"})
    reply = mk("g:one", 2, sender="bob", body={"text": "re", "reply_to": quote(m1, "secret")})
    await append_all(message_log, [m1, reply])
    edited = {"text": "re, edited", "reply_to": quote(m1, "secret")}
    await message_log.apply(*edit_op(reply, 3, edited, version=2, edited_at=T_EDIT), 102)

    await message_log.apply(*gone_op(m1, 4, "recalled", version=2), 103)

    marker = {"seq": 1, "msg_id": m1.msg_id, "sender": "alice", "kind": "text", "state": "recalled"}
    assert (await one(message_log, "g:one", 2)).body == {"text": "re, edited", "reply_to": marker}
    assert await message_log.revisions("g:one", 2) == [
        Revision(version=1, body={"text": "re", "reply_to": marker}, ts=reply.ts)
    ]
    assert (await one(message_log, "g:one", 3)).body["body"] == {"text": "re, edited", "reply_to": marker}
    assert "secret" not in await served_text(message_log, "g:one")


# ---------------------------------------------------------------- operations: reactions


async def test_reactions_by_several_users_keep_their_order(message_log: MessageLog) -> None:
    m1 = mk("g:one", 1)
    await message_log.append(m1, 10)
    steps: list[tuple[str, str, bool, dict[str, list[str]]]] = [
        ("👍", "bob", True, {"👍": ["bob"]}),
        ("👍", "carol", True, {"👍": ["bob", "carol"]}),
        ("❤️", "bob", True, {"👍": ["bob", "carol"], "❤️": ["bob"]}),
        ("👍", "dave", True, {"👍": ["bob", "carol", "dave"], "❤️": ["bob"]}),
        ("👍", "carol", False, {"👍": ["bob", "dave"], "❤️": ["bob"]}),
        ("❤️", "bob", False, {"👍": ["bob", "dave"]}),  # an emoji nobody uses any more is gone
        ("👍", "carol", True, {"👍": ["bob", "dave", "carol"]}),  # reacting again goes to the end
    ]
    events: list[Message] = []
    for i, (emoji, user, added, expected) in enumerate(steps):
        event, change = reaction_op(m1, 2 + i, emoji, user, added, version=1)
        await message_log.apply(event, change, 11 + i)
        events.append(event)
        target = await one(message_log, "g:one", 1)
        assert target.reactions == expected, f"after step {i}"
        assert (target.version, target.body, target.edited_at) == (1, m1.body, 0)  # reactions are no edit

    assert await everything(message_log, "g:one") == [
        msgspec.structs.replace(m1, reactions={"👍": ["bob", "dave", "carol"]}),
        *events,
    ]
    assert await message_log.revisions("g:one", 1) == []
    for i, user in enumerate(["dave", "bob", "carol"]):  # the last reaction removed: no reactions at all
        await message_log.apply(*reaction_op(m1, 20 + i, "👍", user, False, version=1), 30 + i)
    assert (await one(message_log, "g:one", 1)).reactions == {}


async def test_reactions_never_conflict(message_log: MessageLog) -> None:
    m1 = await _edited_once(message_log)  # message 1 is at version 2
    # A reaction based on an old version still applies and leaves the version as it is.
    await message_log.apply(*reaction_op(m1, 4, "👍", "bob", True, version=1), 13)
    assert (await one(message_log, "g:one", 1)).version == 2
    # Concurrent reactions all apply, in call order.
    await asyncio.gather(
        *(message_log.apply(*reaction_op(m1, 5 + i, "🎉", u, True, version=2), 14 + i) for i, u in enumerate("xyz"))
    )
    target = await one(message_log, "g:one", 1)
    assert target.reactions == {"👍": ["bob"], "🎉": ["x", "y", "z"]}
    assert (target.version, target.body) == (2, {"text": "v2"})
    assert seqs(await everything(message_log, "g:one")) == list(range(1, 8))


# ---------------------------------------------------------------- operations: heads, get, seq uniqueness


async def test_heads_after_an_apply_point_at_the_event(message_log: MessageLog) -> None:
    m1 = mk("g:one", 1)
    await message_log.append(m1, 10)
    await message_log.append(mk("g:two", 1), 11)
    steps = [
        edit_op(m1, 2, {"text": "edited"}, version=2, edited_at=T_EDIT),
        reaction_op(m1, 3, "👍", "bob", True, version=2),
        gone_op(m1, 4, "recalled", version=3),
    ]
    for i, (event, change) in enumerate(steps):
        await message_log.apply(event, change, 20 + i)
        assert (await message_log.heads(["g:one"]))["g:one"] == ConvHead(
            conv="g:one", max_seq=event.seq, version=20 + i, last=event
        )
        assert await message_log.max_seq("g:one") == event.seq
        assert await message_log.max_version() == 20 + i
    assert (await message_log.heads(["g:two"]))["g:two"].max_seq == 1


async def test_get_returns_the_stored_seqs_ascending(message_log: MessageLog) -> None:
    a = [mk("g:a", s) for s in (1, 2, 3, 5, 8)]
    b = [mk("g:b", s) for s in range(1, 10)]
    await append_all(message_log, a + b)

    assert await message_log.get("g:a", [8, 1, 5]) == [a[0], a[3], a[4]]
    assert await message_log.get("g:a", [4, 6, 7, 9, 0, 2]) == [a[1]]  # seqs that do not exist are ignored
    assert await message_log.get("g:a", [3, 3, 3]) == [a[2]]
    assert await message_log.get("g:a", []) == []
    assert await message_log.get("g:nobody", [1, 2]) == []
    assert await message_log.get("g:b", [9, 4]) == [b[3], b[8]]


async def test_get_of_many_seqs(message_log: MessageLog) -> None:
    stored = [mk("g:big", s) for s in range(1, 1301) if s % 7]  # every 7th seq missing
    other = [mk("g:small", s) for s in range(1, 601)]
    await asyncio.gather(*(message_log.append(m, 1 + i) for i, m in enumerate(stored + other)))

    assert await message_log.get("g:big", list(range(1400, 0, -1))) == stored
    assert await message_log.get("g:big", list(range(2, 1302, 2))) == [m for m in stored if m.seq % 2 == 0]
    assert await message_log.get("g:small", list(range(1, 1400))) == other


async def test_apply_of_a_seq_that_exists_fails_and_stores_nothing(message_log: MessageLog) -> None:
    m1, m2 = mk("g:one", 1), mk("g:one", 2)
    await append_all(message_log, [m1, m2], first_version=10)
    before = await snapshot(message_log, "g:one")
    for event, change in (
        edit_op(m1, 2, {"text": "x"}, version=2, edited_at=T_EDIT),
        gone_op(m1, 2, "deleted", version=2),
        reaction_op(m1, 2, "👍", "bob", True, version=1),
        edit_op(m1, 1, {"text": "x"}, version=2, edited_at=T_EDIT),  # the event at its own target's seq
    ):
        await raised(message_log.apply(event, change, 20))
        assert await snapshot(message_log, "g:one") == before, event.kind
        assert await message_log.find_by_client_id(event.sender, event.cmid, since_ms=0) is None

    # A seq taken by an operation event is taken for appends and for other operations too.
    e3, change = reaction_op(m1, 3, "👍", "bob", True, version=1)
    await message_log.apply(e3, change, 21)
    before = await snapshot(message_log, "g:one")
    await raised(message_log.append(mk("g:one", 3, cmid="dup"), 22))
    await raised(message_log.apply(*edit_op(m2, 3, {"text": "x"}, version=2, edited_at=T_EDIT), 23))
    assert await snapshot(message_log, "g:one") == before
    assert await message_log.find_by_client_id("alice", "dup", since_ms=0) is None


async def test_concurrent_apply_and_append_of_one_seq_store_one(message_log: MessageLog) -> None:
    m1 = mk("g:one", 1)
    await message_log.append(m1, 10)
    for seq, apply_first in ((2, True), (3, False), (4, True), (5, False)):
        event, change = reaction_op(m1, seq, "👍", f"u{seq}", True, version=1)
        plain = mk("g:one", seq, cmid=f"plain-{seq}")
        calls = [message_log.apply(event, change, 20 + seq), message_log.append(plain, 20 + seq)]
        if not apply_first:
            calls.reverse()

        results = await asyncio.gather(*calls, return_exceptions=True)

        assert sum(r is None for r in results) == 1, results
        stored = await message_log.get("g:one", [seq])
        assert stored in ([event], [plain])
        applied = f"u{seq}" in (await one(message_log, "g:one", 1)).reactions.get("👍", [])
        assert applied == (stored == [event])  # the change is applied exactly when its event is stored
        loser = plain if stored == [event] else event
        assert await message_log.find_by_client_id(loser.sender, loser.cmid, since_ms=0) is None


async def test_apply_is_queued_in_call_order_with_appends(message_log: MessageLog) -> None:
    # apply() appends "like append": queued at once, in call order with appends. Called before an append
    # of the same seq, the apply wins, even while an earlier append is still waiting to be written.
    m1 = mk("g:one", 1)
    await message_log.append(m1, 10)
    m2 = mk("g:one", 2)
    e3, change = reaction_op(m1, 3, "👍", "bob", True, version=1)
    late = mk("g:one", 3, cmid="late")

    results = await asyncio.gather(
        message_log.append(m2, 11),
        message_log.apply(e3, change, 12),
        message_log.append(late, 13),
        return_exceptions=True,
    )

    assert results[:2] == [None, None]
    assert isinstance(results[2], Exception)
    assert await everything(message_log, "g:one") == [msgspec.structs.replace(m1, reactions={"👍": ["bob"]}), m2, e3]


# ---------------------------------------------------------------- operations: durability


async def test_operations_survive_close_and_reopen(message_log_backend: Any) -> None:
    log: MessageLog = await message_log_backend.open()
    m1 = mk("g:one", 1, body={"text": "v1"})
    m2 = mk("g:one", 2, body={"text": "secret"})
    reply = mk("g:one", 3, sender="bob", body={"text": "re", "reply_to": quote(m2, "secret")})
    await append_all(log, [m1, m2, reply], first_version=10)
    await log.apply(*edit_op(m1, 4, {"text": "v2"}, version=2, edited_at=T_EDIT), 13)
    await log.apply(*reaction_op(m1, 5, "👍", "bob", True, version=2), 14)
    await log.apply(*gone_op(m2, 6, "deleted", version=2), 15)
    before = await snapshot(log, "g:one")
    # Another client over the same storage sees it all at once (durable when the awaitable completed).
    other: MessageLog = await message_log_backend.open()
    assert await snapshot(other, "g:one") == before
    await message_log_backend.close(log)
    await message_log_backend.close(other)

    reopened: MessageLog = await message_log_backend.open()
    assert await snapshot(reopened, "g:one") == before
    target = await one(reopened, "g:one", 1)
    assert (target.version, target.edited_at, target.reactions) == (2, T_EDIT, {"👍": ["bob"]})
    assert await reopened.revisions("g:one", 1) == [Revision(version=1, body={"text": "v1"}, ts=m1.ts)]
    assert (await one(reopened, "g:one", 2)).state == "deleted"
    assert "secret" not in await served_text(reopened, "g:one")
    # The versions carry on: a stale edit still conflicts, the next one applies.
    with pytest.raises(VersionConflict):
        await reopened.apply(*edit_op(m1, 7, {"text": "stale"}, version=2, edited_at=T_EDIT + 1), 16)
    await reopened.apply(*edit_op(m1, 7, {"text": "v3"}, version=3, edited_at=T_EDIT + 1), 16)
    assert [r.version for r in await reopened.revisions("g:one", 1)] == [1, 2]
