"""A derived SQLite database (the search index) runs its threads below the send path's CPU priority."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest

from flare_im.backends.sqlite_db import BACKGROUND_NICE, SqliteConfig, SqliteDatabase

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are per thread on Linux only")


def nice_of(thread: threading.Thread | None) -> int:
    assert thread is not None
    assert thread.native_id is not None
    return int(Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()[16])


async def test_a_derived_databases_threads_run_at_a_lower_priority_and_the_stores_do_not(tmp_path: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    store = SqliteDatabase(SqliteConfig(path=str(tmp_path / "store.db")))
    index = SqliteDatabase(SqliteConfig(path=str(tmp_path / "index.db")))
    index.derived()
    store.start()
    index.start()
    try:
        # The threads lower their own priority as they start: a write through each has run after that.
        await store.write(lambda conn: conn.execute("SELECT 1"))
        await index.write(lambda conn: conn.execute("SELECT 1"))
        assert nice_of(store._thread) == base
        assert nice_of(store._checkpointer) == base
        assert nice_of(index._thread) == min(19, base + BACKGROUND_NICE)
        for _ in range(100):  # the checkpoint thread has no write to wait on
            if nice_of(index._checkpointer) != base:
                break
            await asyncio.sleep(0.01)
        assert nice_of(index._checkpointer) == min(19, base + BACKGROUND_NICE)
        assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the event loop's thread is untouched
    finally:
        await store.close()
        await index.close()


async def test_the_writer_counts_its_cpu_time(tmp_path: Path) -> None:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "cpu.db")))
    db.start()
    try:
        before = db.writer_cpu_s

        def busy(conn: object) -> None:
            sum(i * i for i in range(300_000))

        await db.write(busy)
        assert db.writer_cpu_s - before > 0.005
    finally:
        await db.close()
