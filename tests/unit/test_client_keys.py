"""The SQLite log's in-memory table of recent idempotency keys (backends/message_log/client_keys.py), alone and
behind ``SqliteMessageLog.find_by_client_id``."""

from __future__ import annotations

from pathlib import Path

import pytest

from flare_im.backends.message_log import client_keys
from flare_im.backends.message_log.base import Change
from flare_im.backends.message_log.client_keys import RecentClientKeys
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.ids import now_ms, snowflake_floor
from flare_im.protocol.frames import Message


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_every_key_added_is_found_across_growth_and_spans() -> None:
    clock = Clock(1_000_000)
    keys = RecentClientKeys(horizon_s=360, span_s=30, clock=clock)
    added = {}
    for i in range(20_000):  # several times the first table's two-thirds: it grows by new, larger tables
        added[f"u{i % 97}", f"c{i}"] = i + 1
        keys.add(f"u{i % 97}", f"c{i}", i + 1)
        if i % 5_000 == 0:
            clock.ms += 31_000  # and new spans start
    assert len(keys) == 20_000
    for (sender, cmid), msg_id in added.items():
        assert msg_id in keys.candidates(sender, cmid)
    assert keys.candidates("u1", "never") == []
    assert keys.slots <= 20_000 * 3  # at most two-thirds full when it grows, and a new span sized to the last


def test_a_span_older_than_the_horizon_is_dropped_and_coverage_moves_behind_it() -> None:
    clock = Clock(10_000_000)
    keys = RecentClientKeys(horizon_s=100, span_s=10, clock_slack_ms=5_000, clock=clock)
    start = clock.ms
    keys.add("alice", "old", 1)
    assert keys.covered_from_ms == start
    clock.ms += 11_000
    keys.add("alice", "newer", 2)  # a new span
    clock.ms = start + 100_000 + 5_000  # the first span's last insert is at the horizon and the slack: kept
    keys.add("alice", "x", 3)
    assert keys.candidates("alice", "old") == [1]
    clock.ms += 10_001
    keys.add("alice", "y", 4)  # past it: dropped
    assert keys.candidates("alice", "old") == []
    assert keys.candidates("alice", "newer") == [2]
    # Ids made up to the slack after the dropped span's last insert may have been in it.
    assert keys.covered_from_ms == start + 5_000
    assert keys.covered_from_ms <= clock.ms - 100_000


def test_keys_of_one_hash_all_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_keys, "_hash", lambda sender, cmid: 42)
    keys = RecentClientKeys(horizon_s=360)
    for i in range(10):
        keys.add("alice", f"c{i}", 100 + i)
    assert sorted(keys.candidates("bob", "anything")) == list(range(100, 110))


def test_load_covers_from_since() -> None:
    clock = Clock(5_000_000)
    keys = RecentClientKeys(horizon_s=360, clock=clock)
    keys.load([(7, "alice", "a"), (8, "bob", "b")], since_ms=4_000_000)
    assert keys.covered_from_ms == 4_000_000
    assert keys.candidates("bob", "b") == [8]


# ---------------------------------------------------------------- behind the SQLite log


def msg(seq: int, cmid: str, *, sender: str = "alice", ago_ms: int = 0) -> Message:
    ts = now_ms() - ago_ms
    return Message("g:k", seq, str(snowflake_floor(ts) + seq), sender, cmid, "text", {"text": cmid}, ts)


@pytest.fixture
async def opened(tmp_path: Path):  # type: ignore[no-untyped-def]
    dbs: list[SqliteDatabase] = []

    def open_log() -> SqliteMessageLog:
        db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "log.db")))
        log = SqliteMessageLog(db, key_horizon_s=360)
        db.start()
        dbs.append(db)
        return log

    yield open_log, dbs
    for db in dbs:
        await db.close()


async def test_keys_that_share_a_hash_find_only_their_own_row(monkeypatch: pytest.MonkeyPatch, opened) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(client_keys, "_hash", lambda sender, cmid: 7)
    open_log, _ = opened
    log = open_log()
    a, b = msg(1, "a"), msg(2, "b", sender="bob")
    await log.append(a, 1)
    await log.append(b, 2)
    since = now_ms() - 300_000
    assert await log.find_by_client_id("alice", "a", since_ms=since) == a
    assert await log.find_by_client_id("bob", "b", since_ms=since) == b
    assert await log.find_by_client_id("alice", "b", since_ms=since) is None
    assert await log.find_by_client_id("bob", "a", since_ms=since) is None


async def test_the_key_of_an_operation_that_rolled_back_is_not_found(opened) -> None:  # type: ignore[no-untyped-def]
    open_log, _ = opened
    log = open_log()
    await log.append(msg(1, "m1"), 1)
    missing_target = Message(
        "g:k", 2, str(snowflake_floor(now_ms()) + 2), "alice", "op-1", "recall", {"target": 9}, now_ms()
    )
    with pytest.raises(LookupError):
        await log.apply(missing_target, Change(target=9, version=2, state="recalled"), 2)
    assert await log.find_by_client_id("alice", "op-1", since_ms=now_ms() - 300_000) is None
    applied = Message("g:k", 2, str(snowflake_floor(now_ms()) + 3), "alice", "op-2", "recall", {"target": 1}, now_ms())
    await log.apply(applied, Change(target=1, version=2, state="recalled"), 3)
    assert await log.find_by_client_id("alice", "op-2", since_ms=now_ms() - 300_000) == applied


async def test_a_reopened_log_finds_the_keys_of_its_horizon_from_memory_and_older_ones_by_a_scan(opened) -> None:  # type: ignore[no-untyped-def]
    open_log, dbs = opened
    log = open_log()
    recent, old = msg(1, "recent", ago_ms=200_000), msg(2, "old", ago_ms=3_600_000)
    await log.append(recent, 1)
    await log.append(old, 2)
    await dbs[-1].close()
    dbs.pop()

    log = open_log()
    window = now_ms() - 300_000
    assert len(log._keys) == 1  # only the horizon's row was loaded
    assert await log.find_by_client_id("alice", "recent", since_ms=window) == recent
    assert await log.find_by_client_id("alice", "old", since_ms=window) is None
    assert await log.find_by_client_id("alice", "old", since_ms=now_ms() - 7_200_000) == old


async def test_the_file_has_no_index_on_the_idempotency_key(opened) -> None:  # type: ignore[no-untyped-def]
    """The key's index wrote a leaf page per append (docs/performance.md): it must not come back."""
    open_log, dbs = opened
    open_log()
    conn = dbs[-1].reader
    names = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")
    ]
    for name in names:
        columns = {r[2] for r in conn.execute(f"PRAGMA index_xinfo({name})")}
        assert "cmid" not in columns, name
