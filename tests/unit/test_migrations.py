"""The versioned-migration runner (backends/migrations.py) on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import asyncpg
import pytest

from flare_im.backends.migrations import Migration, PostgresMigrator, Schema, SchemaError, SqliteMigrator

NOTES_V1 = Migration(1, "notes", ("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",))
NOTES_V2 = Migration(2, "note authors", ("ALTER TABLE notes ADD COLUMN author TEXT NOT NULL DEFAULT ''",))
# Its first statement succeeds, its second fails: the migration must leave nothing behind.
BROKEN_V3 = Migration(3, "broken", ("CREATE TABLE tags (name TEXT PRIMARY KEY)", "CREATE TABLE notes (x INTEGER)"))
TAGS_V3 = Migration(3, "tags", ("CREATE TABLE tags (name TEXT PRIMARY KEY)",))


def test_migrations_must_be_numbered_in_order() -> None:
    with pytest.raises(ValueError, match=r"1\.\.n"):
        Schema("notes", (NOTES_V2,))
    with pytest.raises(ValueError, match=r"1\.\.n"):
        Schema("notes", (NOTES_V1, TAGS_V3))


def test_postgres_steps_must_be_sql() -> None:
    schema = Schema("notes", (Migration(1, "python", (lambda conn: None,)),))
    with pytest.raises(TypeError, match="must be SQL"):
        PostgresMigrator(None, schema)  # type: ignore[arg-type]


# ---------------------------------------------------------------- SQLite


def sqlite_conn(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=10)


def test_sqlite_upgrade_in_place_keeps_rows(tmp_path: Path) -> None:
    conn = sqlite_conn(tmp_path / "n.db")
    first = SqliteMigrator(conn, Schema("notes", (NOTES_V1,)))
    assert first.current_version() == 0
    assert [m.version for m in first.apply()] == [1]
    conn.execute("INSERT INTO notes (body) VALUES ('kept')")

    later = SqliteMigrator(conn, Schema("notes", (NOTES_V1, NOTES_V2, TAGS_V3)))
    assert [m.name for m in later.pending()] == ["note authors", "tags"]
    assert [m.version for m in later.apply()] == [2, 3]
    assert conn.execute("SELECT body, author FROM notes").fetchall() == [("kept", "")]
    assert [(a.version, a.name) for a in later.applied()] == [(1, "notes"), (2, "note authors"), (3, "tags")]
    assert all(a.applied_at > 1_600_000_000_000 for a in later.applied())


def test_sqlite_a_failed_migration_leaves_nothing_and_the_next_run_resumes(tmp_path: Path) -> None:
    conn = sqlite_conn(tmp_path / "n.db")
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        SqliteMigrator(conn, Schema("notes", (NOTES_V1, NOTES_V2, BROKEN_V3))).apply()
    migrator = SqliteMigrator(conn, Schema("notes", (NOTES_V1, NOTES_V2, TAGS_V3)))
    assert migrator.current_version() == 2  # 1 and 2 committed, 3 rolled back whole
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'tags'").fetchone() is None
    assert not conn.in_transaction
    assert [m.version for m in migrator.apply()] == [3]


def test_sqlite_components_share_one_database(tmp_path: Path) -> None:
    conn = sqlite_conn(tmp_path / "n.db")
    SqliteMigrator(conn, Schema("notes", (NOTES_V1, NOTES_V2))).apply()
    other = SqliteMigrator(conn, Schema("tags", (Migration(1, "tags", ("CREATE TABLE tags (name TEXT)",)),)))
    assert other.current_version() == 0
    assert [m.version for m in other.apply()] == [1]
    assert SqliteMigrator(conn, Schema("notes", (NOTES_V1, NOTES_V2))).current_version() == 2


def test_sqlite_concurrent_runs_apply_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    sqlite_conn(path).execute("PRAGMA journal_mode=WAL")
    schema = Schema("notes", (NOTES_V1, NOTES_V2, TAGS_V3))
    applied: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        conn = sqlite_conn(path)
        start.wait()
        try:
            applied.extend(m.version for m in SqliteMigrator(conn, schema).apply())
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(applied) == [1, 2, 3]


# ---------------------------------------------------------------- PostgreSQL


async def test_postgres_upgrade_in_place_keeps_rows(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        first = PostgresMigrator(conn, Schema("notes", (NOTES_V1,)))
        assert await first.current_version() == 0
        assert await first.applied() == []
        assert [m.version for m in await first.apply()] == [1]
        await conn.execute("INSERT INTO notes (id, body) VALUES (1, 'kept')")

        later = PostgresMigrator(conn, Schema("notes", (NOTES_V1, NOTES_V2, TAGS_V3)))
        assert [m.name for m in await later.pending()] == ["note authors", "tags"]
        assert [m.version for m in await later.apply()] == [2, 3]
        assert await later.apply() == []
        assert [tuple(r) for r in await conn.fetch("SELECT body, author FROM notes")] == [("kept", "")]
        assert [(a.version, a.name) for a in await later.applied()] == [(1, "notes"), (2, "note authors"), (3, "tags")]
    finally:
        await conn.close()


async def test_postgres_a_failed_migration_leaves_nothing_and_the_next_run_resumes(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        with pytest.raises(asyncpg.DuplicateTableError):
            await PostgresMigrator(conn, Schema("notes", (NOTES_V1, NOTES_V2, BROKEN_V3))).apply()
        migrator = PostgresMigrator(conn, Schema("notes", (NOTES_V1, NOTES_V2, TAGS_V3)))
        assert await migrator.current_version() == 2
        assert await conn.fetchval("SELECT to_regclass('tags')") is None
        assert [m.version for m in await migrator.apply()] == [3]
    finally:
        await conn.close()


async def test_postgres_a_newer_database_is_refused(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await PostgresMigrator(conn, Schema("notes", (NOTES_V1, NOTES_V2))).apply()
        with pytest.raises(SchemaError, match="newer than this code"):
            await PostgresMigrator(conn, Schema("notes", (NOTES_V1,))).apply()
    finally:
        await conn.close()


async def test_postgres_concurrent_runs_apply_each_migration_once(postgres_url: str) -> None:
    # Without the lock two runs would both see version 0 and the second CREATE TABLE would fail.
    schema = Schema("notes", (NOTES_V1, NOTES_V2, TAGS_V3))
    conns = [await asyncpg.connect(postgres_url) for _ in range(6)]
    try:
        results = await asyncio.gather(*(PostgresMigrator(c, schema).apply() for c in conns))
        assert sorted(m.version for applied in results for m in applied) == [1, 2, 3]
        assert await PostgresMigrator(conns[0], schema).current_version() == 3
    finally:
        for c in conns:
            await c.close()
