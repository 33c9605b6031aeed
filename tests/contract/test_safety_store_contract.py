"""Contract of the safety port (src/flare_im/backends/safety/base.py), run on SQLite and PostgreSQL: blocks with
their list version, group mutes, and the revision every change moves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flare_im.backends.safety.base import (
    ALLOW,
    APPROVED,
    DENIED,
    DENY,
    DISMISSED,
    EVERYONE,
    OPEN,
    PENDING,
    RESOLVED,
    Block,
    GroupMute,
    Invite,
    JoinRequest,
    Report,
    SpamDecision,
)
from flare_im.backends.safety.sqlite import SqliteSafety
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase


@pytest.fixture(params=["sqlite", "postgres"])
async def safety(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_schemas: Callable[[], contextlib.AbstractAsyncContextManager[str]],
) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "safety.db")))
        store = SqliteSafety(db)
        db.start()
        try:
            yield store
        finally:
            await db.close()
        return
    import asyncpg

    from flare_im.backends.migrations import PostgresMigrator
    from flare_im.backends.safety.postgres import SCHEMA, PostgresSafety, PostgresSafetyConfig

    async with postgres_schemas() as url:
        conn = await asyncpg.connect(url)
        try:
            await PostgresMigrator(conn, SCHEMA).apply()
        finally:
            await conn.close()
        store = await PostgresSafety.open(PostgresSafetyConfig(url=url))
        try:
            yield store
        finally:
            await store.close()


async def test_blocks_and_their_list_version(safety: Any) -> None:
    assert await safety.blocks_of("alice") == ([], 0)
    start = await safety.revision()
    v1 = await safety.set_block("alice", "bob", True, 1_000)
    assert v1 == 1_000
    assert await safety.set_block("alice", "bob", True, 2_000) == 0  # already blocked: nothing changes
    v2 = await safety.set_block("alice", "carol", True, 1_000)  # a clock behind: the version still grows
    assert v2 == 1_001
    await safety.set_block("dave", "bob", True, 3_000)
    blocks, version = await safety.blocks_of("alice")
    assert blocks == [Block("alice", "bob", 1_000), Block("alice", "carol", 1_000)]
    assert version == v2
    assert sorted((b.uid, b.target) for b in await safety.all_blocks()) == [
        ("alice", "bob"),
        ("alice", "carol"),
        ("dave", "bob"),
    ]
    assert await safety.revision() == start + 3
    assert await safety.set_block("alice", "nobody", False, 4_000) == 0  # not blocked: nothing changes
    assert await safety.revision() == start + 3
    v3 = await safety.set_block("alice", "bob", False, 4_000)
    assert v3 == 4_000
    assert (await safety.blocks_of("alice"))[0] == [Block("alice", "carol", 1_000)]
    assert await safety.revision() == start + 4


async def test_mutes_end_at_their_time_and_are_replaced(safety: Any) -> None:
    start = await safety.revision()
    await safety.set_mute(GroupMute("g:one", "bob", 5_000, "alice", 1_000))
    await safety.set_mute(GroupMute("g:one", EVERYONE, 9_000, "alice", 1_000))
    await safety.set_mute(GroupMute("g:two", "carol", 3_000, "alice", 1_000))
    assert [m.uid for m in await safety.mutes_of("g:one", 4_999)] == [EVERYONE, "bob"]
    assert [m.uid for m in await safety.mutes_of("g:one", 5_000)] == [EVERYONE]  # ended at its time
    assert sorted(m.uid for m in await safety.all_mutes(2_000)) == [EVERYONE, "bob", "carol"]
    assert sorted(m.uid for m in await safety.all_mutes(3_000)) == [EVERYONE, "bob"]
    await safety.set_mute(GroupMute("g:one", "bob", 7_000, "dave", 2_000))  # replaced
    assert GroupMute("g:one", "bob", 7_000, "dave", 2_000) in await safety.mutes_of("g:one", 0)
    assert await safety.remove_mute("g:one", "bob")
    assert not await safety.remove_mute("g:one", "bob")
    assert [m.uid for m in await safety.mutes_of("g:one", 0)] == [EVERYONE]
    assert await safety.revision() == start + 5


async def test_reports_open_once_and_close_once(safety: Any) -> None:
    first = Report("r1", "alice", "bob", "g:one", 5, "spam", "ads", OPEN, 1_000, snapshot='{"body": {}}')
    assert await safety.add_report(first) == first
    # The same reporter, user and message while open: the first report answers.
    assert (await safety.add_report(replace(first, report_id="r2", created_at=2_000))).report_id == "r1"
    user_report = Report("r3", "alice", "bob", reason="harassment", created_at=3_000)
    await safety.add_report(user_report)
    await safety.add_report(Report("r4", "carol", "bob", "g:one", 5, created_at=4_000))
    assert [r.report_id for r in await safety.reports(state=OPEN)] == ["r4", "r3", "r1"]  # newest first
    assert [r.report_id for r in await safety.reports(reporter="alice")] == ["r3", "r1"]
    assert [r.report_id for r in await safety.reports(before=4_000, limit=1)] == ["r3"]
    assert await safety.get_report("r3") == user_report
    assert await safety.get_report("nope") is None

    assert await safety.resolve_report("r1", RESOLVED, "recall", "root", "gone", 5_000)
    assert not await safety.resolve_report("r1", DISMISSED, "dismiss", "root", "", 6_000)  # closed once
    assert not await safety.resolve_report("nope", RESOLVED, "none", "root", "", 6_000)
    closed = await safety.get_report("r1")
    assert (closed.state, closed.action, closed.resolver, closed.resolution, closed.resolved_at) == (
        RESOLVED,
        "recall",
        "root",
        "gone",
        5_000,
    )
    assert [r.report_id for r in await safety.reports(state=OPEN)] == ["r4", "r3"]
    # Closed: the same message may be reported again, as a new report.
    again = await safety.add_report(replace(first, report_id="r5", created_at=7_000))
    assert again.report_id == "r5"


async def test_invite_uses_are_counted_atomically_and_end(safety: Any) -> None:
    await safety.put_invite(Invite("one", "g:g", "alice", 1_000, max_uses=1))
    await safety.put_invite(Invite("timed", "g:g", "alice", 2_000, expires_at=5_000, approval=True))
    assert await safety.get_invite("timed") == Invite("timed", "g:g", "alice", 2_000, expires_at=5_000, approval=True)
    # Two joins race for the last use: one wins.
    results = await asyncio.gather(*(safety.use_invite("one", 2_000) for _ in range(5)))
    assert sum(r is not None for r in results) == 1
    assert (await safety.get_invite("one")).uses == 1
    await safety.unuse_invite("one")
    assert (await safety.use_invite("one", 2_000)).uses == 1
    assert await safety.use_invite("timed", 4_999) is not None
    assert await safety.use_invite("timed", 5_000) is None  # expired at its time
    assert [i.code for i in await safety.invites_of("g:g")] == ["timed", "one"]
    assert await safety.revoke_invite("g:g", "timed")
    assert not await safety.revoke_invite("g:g", "timed")
    assert not await safety.revoke_invite("g:other", "one")  # another group's code
    assert await safety.use_invite("timed", 3_000) is None
    assert [i.code for i in await safety.invites_of("g:g")] == ["one"]


async def test_join_requests_are_decided_once(safety: Any) -> None:
    first = await safety.add_join_request(JoinRequest("g:g", "dave", "c", "hi", created_at=1_000))
    assert first == JoinRequest("g:g", "dave", "c", "hi", PENDING, 1_000)
    # Asking again while pending: the pending one.
    assert await safety.add_join_request(JoinRequest("g:g", "dave", "c", "again", created_at=2_000)) == first
    await safety.add_join_request(JoinRequest("g:g", "erin", "c", created_at=1_500))
    assert [r.uid for r in await safety.join_requests("g:g")] == ["dave", "erin"]
    decided = await safety.decide_join_request("g:g", "dave", DENIED, "alice", 3_000)
    assert (decided.state, decided.decider, decided.decided_at) == (DENIED, "alice", 3_000)
    assert await safety.decide_join_request("g:g", "dave", APPROVED, "alice", 3_001) is None
    assert [r.uid for r in await safety.join_requests("g:g", DENIED)] == ["dave"]
    # A denied user may ask again: a new pending request.
    again = await safety.add_join_request(JoinRequest("g:g", "dave", "c", "please", created_at=4_000))
    assert (again.state, again.note, again.created_at) == (PENDING, "please", 4_000)


async def test_group_limits(safety: Any) -> None:
    assert await safety.group_limit("g:g") == 0
    await safety.set_group_limit("g:g", 100_000)
    assert await safety.group_limit("g:g") == 100_000
    await safety.set_group_limit("g:g", 0)
    assert await safety.group_limit("g:g") == 0


async def test_spam_rules_decisions_and_mutes(safety: Any) -> None:
    start = await safety.revision()
    assert await safety.set_domain_rule("spam.biz", DENY)
    assert await safety.set_domain_rule("example.com", ALLOW)
    assert await safety.set_domain_rule("spam.biz", ALLOW)  # replaced
    assert await safety.domain_rules() == {"spam.biz": ALLOW, "example.com": ALLOW}
    assert await safety.set_domain_rule("spam.biz", None)
    assert not await safety.set_domain_rule("spam.biz", None)
    assert await safety.domain_rules() == {"example.com": ALLOW}
    assert await safety.revision() == start + 4  # every change moves it, a no-op does not

    for i, (uid, action) in enumerate([("m", "refused"), ("m", "refused"), ("n", "refused"), ("m", "mute")]):
        await safety.record_decision(SpamDecision(uid, "link", action, f"reason {i}", "d:m:n", 1_000 + i))
    newest = await safety.decisions()
    assert [d.reason for d in newest] == ["reason 3", "reason 2", "reason 1", "reason 0"]
    assert newest[0].decision_id > newest[1].decision_id > 0
    mine = await safety.decisions(uid="m", limit=2)
    assert [d.reason for d in mine] == ["reason 3", "reason 1"]
    assert [d.reason for d in await safety.decisions(uid="m", before=mine[1].decision_id)] == ["reason 0"]
    assert await safety.count_decisions("m", 1_000, "refused") == 2
    assert await safety.count_decisions("m", 1_001, "refused") == 1
    assert await safety.count_decisions("m", 0, "mute") == 1

    await safety.set_user_mute("m", 5_000)
    assert await safety.user_mutes(4_999) == {"m": 5_000}
    assert await safety.user_mutes(5_000) == {}  # ended at its time
    await safety.set_user_mute("m", 0)
    assert await safety.user_mutes(0) == {}
