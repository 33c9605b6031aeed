"""Backend factories for the port contract suites (DESIGN.md §5: one contract suite per port).

Each port has one parametrised fixture yielding a *backend harness*: an object that opens adapter instances
over one shared storage (``open``), closes them (``close``) and, where the backend can say, reports how many
transactions it committed (``commits``). The tests only see the port (``MessageLog``, ``UserStore`` ...).

Adding a distributed adapter (PostgreSQL, ClickHouse, Redis): write a harness class like the SQLite ones
below (``open`` connects a new client to the same database/keyspace, ``close`` disconnects it, ``close_all``
disconnects every client and wipes what the test wrote; ``commits`` may return None), then add its name to the
``*_BACKENDS`` list of the port and a branch to its ``_make_*`` function.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sequencer.base import SeedFn, Sequencer
from flare_im.backends.sequencer.memory import MemorySequencer
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase

# ---------------------------------------------------------------- SQLite (embedded) harnesses


class _SqliteHarness:
    """Opens adapters of one kind over one SQLite file; each ``open`` is a new SqliteDatabase on that file."""

    name = "sqlite"

    def __init__(self, path: Path, adapter: Callable[[SqliteDatabase], Any]) -> None:
        self._path = str(path)
        self._adapter = adapter
        self._dbs: dict[int, SqliteDatabase] = {}  # id(adapter) -> its database

    async def open(self) -> Any:
        db = SqliteDatabase(SqliteConfig(path=self._path))
        adapter = self._adapter(db)  # runs the schema migration, before start()
        db.start()  # inside the running loop: the writer resolves futures on it
        self._dbs[id(adapter)] = db
        return adapter

    async def close(self, adapter: Any) -> None:
        db = self._dbs.pop(id(adapter))
        await db.close()

    async def close_all(self) -> None:
        for key in list(self._dbs):
            await self._dbs.pop(key).close()

    def commits(self, adapter: Any) -> int | None:
        """Transactions committed by ``adapter``'s database so far (group commit is observable)."""
        return self._dbs[id(adapter)].commits


# ---------------------------------------------------------------- PostgreSQL harnesses


class _PostgresRelationalHarness:
    """Opens PostgresRelational adapters over one schema (dropped by its fixture), migrated on first use."""

    name = "postgres"

    def __init__(self, url: str) -> None:
        self._url = url
        self._migrated = False
        self._stores: list[Any] = []

    async def open(self) -> Any:
        import asyncpg

        from flare_im.backends.migrations import PostgresMigrator
        from flare_im.backends.relational.postgres import SCHEMA, PostgresConfig, PostgresRelational

        if not self._migrated:
            conn = await asyncpg.connect(self._url)
            try:
                await PostgresMigrator(conn, SCHEMA).apply()
            finally:
                await conn.close()
            self._migrated = True
        store = await PostgresRelational.open(PostgresConfig(url=self._url, min_connections=1))
        self._stores.append(store)
        return store

    async def close(self, adapter: Any) -> None:
        self._stores.remove(adapter)
        await adapter.close()

    async def close_all(self) -> None:
        while self._stores:
            await self._stores.pop().close()

    def commits(self, adapter: Any) -> int | None:
        commits: int = adapter.commits
        return commits


# ---------------------------------------------------------------- message log

# Distributed adapters go here: "clickhouse" (message log), with a harness as described above.
MESSAGE_LOG_BACKENDS = ["sqlite"]


def _make_message_log_backend(name: str, tmp_path: Path) -> _SqliteHarness:
    if name == "sqlite":
        return _SqliteHarness(tmp_path / "t.db", SqliteMessageLog)
    raise AssertionError(f"no harness for message log backend {name!r}")


@pytest.fixture(params=MESSAGE_LOG_BACKENDS)
async def message_log_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[_SqliteHarness]:
    backend = _make_message_log_backend(request.param, tmp_path)
    try:
        yield backend
    finally:
        await backend.close_all()


@pytest.fixture
async def message_log(message_log_backend: _SqliteHarness) -> MessageLog:
    log: MessageLog = await message_log_backend.open()
    return log


# ---------------------------------------------------------------- relational (users, groups, memberships)

# One adapter per backend implementing UserStore, GroupStore and MembershipStore.
RELATIONAL_BACKENDS = ["sqlite", "postgres"]


async def _make_relational_backend(
    name: str, tmp_path: Path, request: pytest.FixtureRequest, cleanup: contextlib.AsyncExitStack
) -> _SqliteHarness | _PostgresRelationalHarness:
    if name == "sqlite":
        return _SqliteHarness(tmp_path / "t.db", SqliteRelational)
    if name == "postgres":
        schemas = request.getfixturevalue("postgres_schemas")
        return _PostgresRelationalHarness(await cleanup.enter_async_context(schemas()))
    raise AssertionError(f"no harness for relational backend {name!r}")


@pytest.fixture(params=RELATIONAL_BACKENDS)
async def relational_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[_SqliteHarness | _PostgresRelationalHarness]:
    async with contextlib.AsyncExitStack() as cleanup:
        backend = await _make_relational_backend(request.param, tmp_path, request, cleanup)
        try:
            yield backend
        finally:
            await backend.close_all()


@pytest.fixture
async def relational(relational_backend: _SqliteHarness | _PostgresRelationalHarness) -> Any:
    """One adapter implementing UserStore, GroupStore and MembershipStore."""
    return await relational_backend.open()


# ---------------------------------------------------------------- sequencer


class SeedLog:
    """Stands in for ``MessageLog.max_seq``: the seed function a sequencer re-seeds from.

    ``max_seq`` holds each conversation's durable max seq; ``calls`` records every seed read. While ``gate``
    is cleared, seed reads wait on it (so concurrent first calls pile up on one seed read).
    """

    def __init__(self) -> None:
        self.max_seq: dict[str, int] = {}
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, conv: str) -> int:
        self.calls.append(conv)
        await self.gate.wait()
        await asyncio.sleep(0)
        return self.max_seq.get(conv, 0)


# Distributed adapters go here: "redis" (INCR on the conversation key, seeded from the log on a miss).
SEQUENCER_BACKENDS = ["memory"]


@pytest.fixture(params=SEQUENCER_BACKENDS)
async def sequencer_factory(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[SeedFn], Sequencer]]:
    """A function building a fresh sequencer (over fresh state) from a seed function."""
    if request.param == "memory":
        yield MemorySequencer
        return
    raise AssertionError(f"no harness for sequencer backend {request.param!r}")


@pytest.fixture
def seed_log() -> SeedLog:
    return SeedLog()


@pytest.fixture
def sequencer(sequencer_factory: Callable[[SeedFn], Sequencer], seed_log: SeedLog) -> Sequencer:
    return sequencer_factory(seed_log)
