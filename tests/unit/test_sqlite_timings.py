"""The writer's timings: what an operation's time to durable is made of (queue wait, transaction, commit)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.observability.stats import Histogram


def over(h: Histogram, seconds: float) -> int:
    """Observations above ``seconds`` (a bucket bound)."""
    return sum(h.counts[h.bounds.index(seconds) + 1 :])


async def test_a_transaction_and_the_wait_behind_it_are_measured_apart_from_the_commit(tmp_path: Path) -> None:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "t.db")))
    db.start()
    started = threading.Event()
    try:
        await db.write(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
        base = (db.queue_seconds.count, db.transaction_seconds.count, db.commit_seconds.count)

        def slow(conn: sqlite3.Connection) -> None:
            started.set()
            conn.execute("INSERT INTO t VALUES (1)")
            time.sleep(0.3)  # a statement that holds the writer, as a GIL wait or a big batch does

        first = db.write(slow)
        await asyncio.to_thread(started.wait, 5)
        second = db.write(lambda conn: conn.execute("INSERT INTO t VALUES (2)"))  # queued behind it
        await asyncio.gather(first, second)

        assert (db.queue_seconds.count, db.transaction_seconds.count) == (base[0] + 2, base[1] + 2)
        assert db.commit_seconds.count == base[2] + 2
        # The slow transaction takes its 0.3 s, the second waits most of that in the queue; neither is commit time.
        assert over(db.transaction_seconds, 0.25) == 1
        assert over(db.queue_seconds, 0.25) == 1
        assert db.transaction_seconds.sum >= 0.3
        assert db.commit_seconds.sum < db.transaction_seconds.sum - 0.25
        assert db.fetchall("SELECT x FROM t ORDER BY x") == [(1,), (2,)]
    finally:
        await db.close()
