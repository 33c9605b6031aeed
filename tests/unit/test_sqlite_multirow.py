"""MultiRow: many rows written with a few statement runs (each run gives up the GIL) instead of one per row."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from flare_im.backends.search.sqlite import _UPSERT
from flare_im.backends.sqlite_db import MultiRow


class CountingConnection:
    """Counts the statement runs given to the connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.runs: list[int] = []  # parameters per run

    def execute(self, sql: str, params: list[Any]) -> sqlite3.Cursor:
        self.runs.append(len(params))
        return self.conn.execute(sql, params)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 65, 100, 200])
def test_every_row_is_written_in_few_runs(n: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
    counting = CountingConnection(conn)
    MultiRow("INSERT INTO t (a, b) VALUES ", 2).run(counting, [(i, f"r{i}") for i in range(n)])  # type: ignore[arg-type]
    assert conn.execute("SELECT a, b FROM t ORDER BY a").fetchall() == [(i, f"r{i}") for i in range(n)]
    # Chunks of 64, then the binary digits of the rest: 100 rows = 64 + 32 + 4 in 3 runs, not 100.
    assert len(counting.runs) == n // 64 + bin(n % 64).count("1")
    assert sum(counting.runs) == 2 * n


def test_a_row_of_the_wrong_width_is_refused() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a INTEGER, b TEXT)")
    with pytest.raises(ValueError, match="2 values"):
        MultiRow("INSERT INTO t (a, b) VALUES ", 2).run(conn, [(1,)])
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="power of two"):
        MultiRow("INSERT INTO t VALUES ", 0)
    with pytest.raises(ValueError, match="power of two"):
        MultiRow("INSERT INTO t VALUES ", 2, max_rows=48)


def test_a_failing_chunk_raises_and_leaves_the_transaction_to_the_caller() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL)")
    conn.execute("BEGIN")
    with pytest.raises(sqlite3.IntegrityError):
        MultiRow("INSERT INTO t (a, b) VALUES ", 2).run(conn, [(1, "x"), (2, None)])
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_the_search_upsert_inserts_replaces_and_keeps_unchanged_rows() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE search_docs (msg_id INTEGER PRIMARY KEY, text TEXT NOT NULL, n INTEGER DEFAULT 0)")
    conn.execute(
        "CREATE TRIGGER bump AFTER UPDATE OF text ON search_docs BEGIN"
        " UPDATE search_docs SET n = n + 1 WHERE msg_id = new.msg_id; END"
    )
    _UPSERT.run(conn, [(i, f"t{i}") for i in range(70)])
    _UPSERT.run(conn, [(1, "t1"), (2, "changed"), (100, "new")])  # 1 unchanged: not rewritten
    rows = dict(((i, (t, n)) for i, t, n in conn.execute("SELECT msg_id, text, n FROM search_docs")))
    assert len(rows) == 71
    assert rows[1] == ("t1", 0)
    assert rows[2] == ("changed", 1)
    assert rows[100] == ("new", 0)
