"""The send path's block and mute checks (services/safety.py), in process with a clock moved by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flare_im.backends.safety.base import EVERYONE, GroupMute
from flare_im.backends.safety.sqlite import SqliteSafety
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.safety import SafetyCache


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteSafety]:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "s.db")))
    s = SqliteSafety(db)
    db.start()
    yield s
    await db.close()


def refused(cache: SafetyCache, sender: str, conv: str, recipients: list[str]) -> dict[str, object] | None:
    try:
        cache.check_send(sender, conv, recipients)
    except FlareError as exc:
        error = exc
    else:
        return None
    assert error.code == ErrorCode.FORBIDDEN
    return error.detail


async def test_mute_ends_at_its_time_and_admins_send_under_mute_all(store: SqliteSafety) -> None:
    clock = Clock()
    roles = {"alice": "owner", "bob": "member", "carol": "admin", "dave": "member"}
    cache = SafetyCache(store, store, role_of=lambda conv, uid: roles.get(uid), clock=clock)
    await cache.load()
    conv = "g:g1"
    assert refused(cache, "bob", conv, list(roles)) is None
    await store.set_mute(GroupMute(conv, "bob", clock.now + 60_000, "alice", clock.now))
    await cache.reload("mutes", conv)
    assert refused(cache, "bob", conv, list(roles)) == {"reason": "muted", "until": clock.now + 60_000}
    assert refused(cache, "dave", conv, list(roles)) is None
    clock.now += 59_999
    assert refused(cache, "bob", conv, list(roles)) is not None
    clock.now += 1  # the mute ends exactly at its time
    assert refused(cache, "bob", conv, list(roles)) is None

    await store.set_mute(GroupMute(conv, EVERYONE, clock.now + 1_000, "alice", clock.now))
    await cache.reload("mutes", conv)
    assert refused(cache, "dave", conv, list(roles)) == {"reason": "muted_all", "until": clock.now + 1_000}
    assert refused(cache, "carol", conv, list(roles)) is None  # admin
    assert refused(cache, "alice", conv, list(roles)) is None  # owner
    clock.now += 1_000
    assert refused(cache, "dave", conv, list(roles)) is None


async def test_blocks_both_ways_in_direct_conversations_only(store: SqliteSafety) -> None:
    cache = SafetyCache(store, store, role_of=lambda conv, uid: None)
    await store.set_block("alice", "bob", True, 1)
    await cache.load()  # as at start: everything read from the store
    dm = ["alice", "bob"]
    assert refused(cache, "bob", "d:alice:bob", dm) == {"reason": "blocked"}
    assert refused(cache, "alice", "d:alice:bob", dm) == {"reason": "blocking"}
    assert refused(cache, "bob", "g:shared", ["alice", "bob", "carol"]) is None
    assert cache.audience("bob", ["alice", "carol"]) == ["carol"]
    assert cache.audience("carol", ["alice", "bob"]) == ["alice", "bob"]
    # Another node unblocked: this node re-reads alice's list on the notice.
    await store.set_block("alice", "bob", False, 2)
    await cache.reload("blocks", "alice")
    assert refused(cache, "bob", "d:alice:bob", dm) is None
    assert cache.blocked_by("bob") is None
    # A notice lost on the bus: the revision poll reloads everything.
    await store.set_block("carol", "bob", True, 3)
    assert cache.audience("bob", ["carol"]) == ["carol"]
    await cache.reload_if_moved()
    assert cache.audience("bob", ["carol"]) == []
