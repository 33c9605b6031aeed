"""The write-ahead log of SqliteDatabase stays bounded under a writer that never pauses, and every
acknowledged write survives the resets (no timing assertions: sizes and contents only)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from flare_im.backends.sqlite_db import RESET_HARD_FACTOR, SqliteConfig, SqliteDatabase

LIMIT = 128 * 1024
ROUNDS = 400
PER_ROUND = 8  # concurrent writes: they share transactions (group commit)
ROW_BYTES = 1500
# Twice the reset size (past it the writer stops waiting for the checkpoint thread), plus room for
# the transactions committed while the checkpoint thread finishes a pass (its lock makes the writer's own
# checkpoint wait for the next transaction) or while a reader was in the way of a start-over.
BOUND = RESET_HARD_FACTOR * LIMIT + 1024 * 1024


def blob(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (ROW_BYTES // 32)


def wal_size(path: Path) -> int:
    try:
        return os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return 0


async def drive(db: SqliteDatabase, path: Path) -> int:
    """Many rounds of concurrent inserts, each awaited (acknowledged) before the next; a point read in
    between, as the event loop does. Returns the largest WAL size seen."""

    def insert(i: int) -> object:
        return lambda conn: conn.execute("INSERT INTO t (id, body) VALUES (?, ?)", (i, blob(i)))

    largest = 0
    for r in range(ROUNDS):
        ids = range(r * PER_ROUND, (r + 1) * PER_ROUND)
        await asyncio.gather(*(db.write(insert(i)) for i in ids))  # type: ignore[arg-type]
        assert db.fetchone("SELECT body FROM t WHERE id = ?", (ids[-1],))[0] == blob(ids[-1])
        largest = max(largest, wal_size(path))
    return largest


def stored(path: Path) -> dict[int, bytes]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return dict(conn.execute("SELECT id, body FROM t"))
    finally:
        conn.close()


def expected() -> dict[int, bytes]:
    return {i: blob(i) for i in range(ROUNDS * PER_ROUND)}


@pytest.mark.parametrize("interval_s", [3600.0, 0.005], ids=["on-demand", "periodic-checkpoints"])
async def test_wal_stays_bounded_and_nothing_acknowledged_is_lost(tmp_path: Path, interval_s: float) -> None:
    path = tmp_path / "flare.db"
    db = SqliteDatabase(SqliteConfig(path=str(path), wal_reset_bytes=LIMIT, checkpoint_interval_s=interval_s))
    db.migrate(["CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)"])
    db.start()
    try:
        largest = await drive(db, path)
        assert db.wal_resets > 5  # the WAL started over many times: ~7 MB went through it
        # Each reset's copy-back and each checkpoint pass is timed (flare_sqlite_wal_reset_seconds, ..._checkpoint_...)
        assert db.reset_seconds.count == db.wal_resets
        assert db.checkpoint_seconds.count >= 1
        assert largest <= BOUND
        assert stored(path) == expected()  # read by another connection while the database is running
    finally:
        await db.close()
    assert stored(path) == expected()


async def test_without_resets_the_same_load_grows_the_wal_past_the_bound(tmp_path: Path) -> None:
    """The control: what the bound above would catch if the writer stopped starting the WAL over."""
    path = tmp_path / "flare.db"
    db = SqliteDatabase(SqliteConfig(path=str(path), wal_reset_bytes=0, checkpoint_interval_s=3600.0))
    db.migrate(["CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)"])
    db.start()
    try:
        assert await drive(db, path) > 4 * BOUND
        assert db.wal_resets == 0
    finally:
        await db.close()
    assert stored(path) == expected()
