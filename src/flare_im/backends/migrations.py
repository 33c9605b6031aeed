"""Versioned schema migrations for SQLite and PostgreSQL.

A *schema* is the ordered list of numbered migrations of one component (``relational``, later
``message_log``): several components may share one database, so each row of the ``schema_migrations`` table
names its component. A database is at version N when migrations 1..N of the component are recorded there.

``apply()`` runs each pending migration in its own transaction (both engines have transactional DDL): the
migration's statements and its ``schema_migrations`` row commit together or not at all, so an interrupted
run leaves the database at the last migration that completed and the next run resumes from there.
Concurrent runs are safe: SQLite serialises them with ``BEGIN IMMEDIATE``, PostgreSQL with a transaction
advisory lock per schema and component; each run re-reads the version once it holds the lock.

SQLite databases made before versioning existed have the tables but no ``schema_migrations`` rows: a
schema's ``detect`` function inspects which tables and columns exist and says which version that is; the
runner records migrations 1..that version as applied ("stamps" them) before applying the rest.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

# A SQLite step is SQL, or a function for what SQL cannot say (e.g. add a column only where it is missing).
SqliteStep = str | Callable[[sqlite3.Connection], None]

_SQLITE_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL,
    PRIMARY KEY (component, version))"""
_POSTGRES_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, applied_at BIGINT NOT NULL,
    PRIMARY KEY (component, version))"""


class SchemaError(Exception):
    """The database's schema does not match the code: behind (run ``flare migrate``) or newer."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    steps: tuple[SqliteStep, ...]  # PostgreSQL: SQL strings only


@dataclass(frozen=True, slots=True)
class Schema:
    component: str
    migrations: tuple[Migration, ...]
    # SQLite only: the version of a database made before versioning (0: none of the schema exists).
    detect: Callable[[sqlite3.Connection], int] | None = None

    def __post_init__(self) -> None:
        versions = [m.version for m in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"{self.component}: migrations must be numbered 1..n in order, got {versions}")

    @property
    def latest(self) -> int:
        return len(self.migrations)

    def after(self, version: int) -> list[Migration]:
        return list(self.migrations[version:])


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    applied_at: int  # epoch ms


def check_version(schema: Schema, version: int, where: str) -> None:
    """Raise SchemaError unless ``version`` is the latest the code knows."""
    if version < schema.latest:
        raise SchemaError(
            f"the {schema.component} schema of {where} is at version {version}, this code needs {schema.latest}:"
            " run `flare migrate`"
        )
    _check_not_newer(schema, version, where)


def _check_not_newer(schema: Schema, version: int, where: str) -> None:
    if version > schema.latest:
        raise SchemaError(
            f"the {schema.component} schema of {where} is at version {version}, newer than this code"
            f" ({schema.latest}): run a newer flare"
        )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------- SQLite


class SqliteMigrator:
    """Migrations of one schema over a SQLite connection in autocommit mode (``isolation_level=None``)."""

    def __init__(self, conn: sqlite3.Connection, schema: Schema) -> None:
        self._conn = conn
        self._schema = schema

    def _recorded(self) -> list[AppliedMigration]:
        exists = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if not exists:
            return []
        rows = self._conn.execute(
            "SELECT version, name, applied_at FROM schema_migrations WHERE component = ? ORDER BY version",
            (self._schema.component,),
        ).fetchall()
        return [AppliedMigration(*row) for row in rows]

    def _detected(self) -> int:
        detect = self._schema.detect
        return detect(self._conn) if detect is not None else 0

    def current_version(self) -> int:
        """The recorded version; for a database made before versioning, the detected one."""
        recorded = self._recorded()
        return recorded[-1].version if recorded else self._detected()

    def applied(self) -> list[AppliedMigration]:
        """Recorded migrations (a database not yet stamped: the detected ones, ``applied_at`` 0)."""
        recorded = self._recorded()
        if recorded:
            return recorded
        return [AppliedMigration(m.version, m.name, 0) for m in self._schema.migrations[: self._detected()]]

    def pending(self) -> list[Migration]:
        return self._schema.after(self.current_version())

    def apply(self) -> list[Migration]:
        """Stamp a database made before versioning, then apply every pending migration; returns those."""
        conn, schema = self._conn, self._schema
        done: list[Migration] = []
        while True:
            conn.execute("BEGIN IMMEDIATE")  # the write lock: a concurrent run waits here, then sees our rows
            try:
                conn.execute(_SQLITE_TABLE)
                version = self._stamp_if_unversioned()
                _check_not_newer(schema, version, "this database")
                if version == schema.latest:
                    conn.execute("COMMIT")
                    return done
                migration = schema.migrations[version]
                for step in migration.steps:
                    if isinstance(step, str):
                        conn.execute(step)
                    else:
                        step(conn)
                conn.execute(
                    "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?,?,?,?)",
                    (schema.component, migration.version, migration.name, _now_ms()),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            done.append(migration)

    def _stamp_if_unversioned(self) -> int:
        recorded = self._recorded()
        if recorded:
            return recorded[-1].version
        version = self._detected()
        now = _now_ms()
        self._conn.executemany(
            "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?,?,?,?)",
            [(self._schema.component, m.version, m.name, now) for m in self._schema.migrations[:version]],
        )
        return version


# ---------------------------------------------------------------- PostgreSQL


class PostgresMigrator:
    """Migrations of one schema over an asyncpg connection, in the connection's current schema
    (``search_path``)."""

    def __init__(self, conn: asyncpg.Connection, schema: Schema) -> None:
        self._conn = conn
        self._schema = schema
        for migration in schema.migrations:
            if not all(isinstance(step, str) for step in migration.steps):
                raise TypeError(f"{schema.component} migration {migration.version}: PostgreSQL steps must be SQL")

    async def applied(self) -> list[AppliedMigration]:
        exists = await self._conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return []
        rows = await self._conn.fetch(
            "SELECT version, name, applied_at FROM schema_migrations WHERE component = $1 ORDER BY version",
            self._schema.component,
        )
        return [AppliedMigration(r["version"], r["name"], r["applied_at"]) for r in rows]

    async def current_version(self) -> int:
        applied = await self.applied()
        return applied[-1].version if applied else 0

    async def pending(self) -> list[Migration]:
        return self._schema.after(await self.current_version())

    async def apply(self) -> list[Migration]:
        """Apply every pending migration, each in its own transaction; returns those applied by this call."""
        conn, schema = self._conn, self._schema
        done: list[Migration] = []
        while True:
            async with conn.transaction():
                # One lock per (schema, component), held until this transaction ends: concurrent runs queue.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(coalesce(current_schema(), '') || ':' || $1))",
                    f"flare-migrations:{schema.component}",
                )
                await conn.execute(_POSTGRES_TABLE)
                version = await self.current_version()
                _check_not_newer(schema, version, "this database")
                if version == schema.latest:
                    return done
                migration = schema.migrations[version]
                for step in migration.steps:
                    assert isinstance(step, str)
                    await conn.execute(step)
                await conn.execute(
                    "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES ($1, $2, $3, $4)",
                    schema.component,
                    migration.version,
                    migration.name,
                    _now_ms(),
                )
            done.append(migration)
