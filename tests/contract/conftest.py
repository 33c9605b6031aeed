"""Backend factories for the port contract suites (DESIGN.md §5: one contract suite per port).

Each port has one parametrised fixture yielding a *backend harness*: an object that opens adapter instances
over one shared storage (``open``), closes them (``close``) and, where the backend can say, reports how many
transactions it committed (``commits``). The tests only see the port (``MessageLog``, ``UserStore`` ...).

Adding a distributed adapter (PostgreSQL, ClickHouse, Redis): write a harness class like the SQLite ones
below (``open`` connects a new client to the same database/keyspace, ``close`` disconnects it, ``close_all``
disconnects every client and wipes what the test wrote; ``commits`` may return None), then add its name to the
``*_BACKENDS`` list of the port and a branch to its ``_make_*`` function.

Queue harnesses (memory, Kafka) differ: they open producers and consumers (``producer()``, ``consumer(topics,
group)``) and make topics and group names unique to the test (``topic(partitions)``, ``group()``); the Kafka one
deletes the test's topics at the end.

ClickHouse harnesses (message log): "clickhouse" is the ClickHouse server of ``scripts/services.sh start``
(``FLARE_TEST_CLICKHOUSE_URL``); every test gets its own database, created on first ``open`` and dropped by
``close_all``, so parallel runs never meet. "chdb" is current ClickHouse in-process, on a directory of the test's
tmp_path. ``commits`` reports the adapter's INSERTs into the messages table (its group insert).

Redis harnesses: every test gets a random key prefix on the test database (``FLARE_TEST_REDIS_URL``, default
db 15), so runs sharing one Redis never meet; ``flush`` deletes that prefix's keys (what a Redis restarted
empty looks like to the adapters, without FLUSHDB wiping other runs) and ``close_all`` does it at the end.
Without a reachable Redis these tests skip, and fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from redis.asyncio import Redis
from tests.clock import ManualClock
from tests.services import fail_or_skip, require

from flare_im.backends.bus.memory import MemoryBroker, MemoryNodeBus
from flare_im.backends.bus.redis import RedisNodeBus
from flare_im.backends.clickhouse_client import connect as clickhouse_connect
from flare_im.backends.idempotency.memory import MemoryIdempotencyState, MemoryIdempotencyStore
from flare_im.backends.idempotency.redis import RedisIdempotencyStore
from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.message_log.clickhouse import ClickHouseConfig, ClickHouseMessageLog
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.queue.kafka import KafkaConsumer, KafkaProducer, KafkaQueueAdmin, kafka_config_from_url
from flare_im.backends.queue.memory import MemoryConsumer, MemoryProducer, MemoryQueueAdmin, MemoryQueueBroker
from flare_im.backends.ratelimit.memory import MemoryRateLimiter, MemoryRateState
from flare_im.backends.ratelimit.redis import RedisRateLimiter
from flare_im.backends.redis_client import redis_from_url
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.routes.memory import MemoryRouteState, MemoryRouteTable
from flare_im.backends.routes.redis import RedisRouteTable
from flare_im.backends.sequencer.base import SeedFn, Sequencer
from flare_im.backends.sequencer.memory import MemorySequencer
from flare_im.backends.sequencer.redis import RedisSequencer
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


# ---------------------------------------------------------------- in-process and Redis harnesses

REDIS_URL = os.environ.get("FLARE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@functools.cache
def _redis_unreachable() -> str | None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"Redis at {REDIS_URL} is unreachable ({exc}); set FLARE_TEST_REDIS_URL"
    finally:
        client.close()
    return None


def require_redis() -> None:
    """Skip the test without a reachable Redis; under CI=true fail instead."""
    reason = _redis_unreachable()
    if reason is not None:
        fail_or_skip(reason)


async def delete_prefix(prefix: str) -> None:
    """Delete every key under ``prefix`` in the test database."""
    client = Redis.from_url(REDIS_URL)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()


class _MemoryHarness:
    """Opens in-process adapters over one state object, the way Redis adapters share one server. Adapters
    that take a clock get ``clock``, which only ``advance`` moves."""

    name = "memory"

    def __init__(self, build: Callable[..., Any], clear: Callable[[], None], clock: ManualClock | None = None) -> None:
        self._build = build
        self._clear = clear
        self.clock = ManualClock() if clock is None else clock
        self._opened: list[Any] = []

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the adapters: at once, on their clock."""
        self.clock.advance(seconds)

    def open(self, *args: Any, **options: Any) -> Any:
        adapter = self._build(*args, **options)
        self._opened.append(adapter)
        return adapter

    async def flush(self) -> None:
        """Lose the shared state, as a Redis that restarted empty."""
        self._clear()

    async def close_all(self) -> None:
        for adapter in self._opened:
            if hasattr(adapter, "close"):
                await adapter.close()


class _RedisHarness:
    """Opens Redis adapters under one random key prefix, each with its own client (as separate nodes)."""

    name = "redis"

    def __init__(self, build: Callable[..., Any]) -> None:
        require_redis()
        self.prefix = f"flare-test:{uuid.uuid4().hex}:"
        self._build = build
        self._opened: list[Any] = []
        self.clients: list[Redis] = []

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the adapters: Redis keeps its own time, so this sleeps. At least that much
        passes (more on a loaded machine): tests using it leave margins for that."""
        await asyncio.sleep(seconds)

    def open(self, *args: Any, **options: Any) -> Any:
        client = redis_from_url(REDIS_URL)
        self.clients.append(client)
        adapter = self._build(client, self.prefix, *args, **options)
        self._opened.append(adapter)
        return adapter

    async def flush(self) -> None:
        """Delete the test's keys: to the adapters, Redis restarted empty."""
        await delete_prefix(self.prefix)

    async def close_all(self) -> None:
        for adapter in self._opened:
            if hasattr(adapter, "close"):
                await adapter.close()
        await delete_prefix(self.prefix)
        for client in self.clients:
            await client.aclose()


# ---------------------------------------------------------------- message log


# Distributed adapters go here: "clickhouse" (message log), with a harness as described above.
class _QueuedLogHarness:
    """A gateway's distributed message log: the queue (in-process twin), L0 on Redis, and a store (SQLite
    here; ClickHouse has its own harness) written by a store worker running beside it, as in a cluster."""

    name = "queued"
    topic = "messages"
    group = "store"

    def __init__(self, tmp_path: Path) -> None:
        require_redis()
        self._store_path = tmp_path / "store.db"
        self.prefix = f"flare-test:{uuid.uuid4().hex}:"
        self.broker = MemoryQueueBroker()
        self.broker.create_topic(self.topic, 4)
        self._opened: dict[int, tuple[Any, ...]] = {}
        self._store_db: SqliteDatabase | None = None
        self._worker: asyncio.Task[None] | None = None
        self._consumer: MemoryConsumer | None = None

    async def _start_worker(self) -> SqliteMessageLog:
        if self._store_db is None:
            from flare_im.workers.store import StoreWorker

            self._store_db = SqliteDatabase(SqliteConfig(path=str(self._store_path)))
            self.store = SqliteMessageLog(self._store_db)
            self._store_db.start()
            self._consumer = MemoryConsumer(self.broker, [self.topic], self.group)
            await self._consumer.start()
            self._worker = asyncio.ensure_future(StoreWorker(self._consumer, self.store).run())
        return self.store

    async def open(self) -> Any:
        from flare_im.backends.message_log.queued import QueuedMessageLog
        from flare_im.backends.message_log.recent_cache import RecentCache

        store = await self._start_worker()
        client = redis_from_url(REDIS_URL)
        producer = MemoryProducer(self.broker)
        await producer.start()
        offsets = MemoryConsumer(self.broker, [self.topic], self.group)

        async def worker_offsets() -> dict[int, int]:
            return await offsets.committed(self.topic)

        log = QueuedMessageLog(
            producer=producer,
            topic=self.topic,
            cache=RecentCache(client, self.prefix, keep=20),
            store=store,
            worker_offsets=worker_offsets,
            catch_up_timeout_s=5,
        )
        self._opened[id(log)] = (client, producer)
        return log

    async def close(self, adapter: Any) -> None:
        client, producer = self._opened.pop(id(adapter))
        await producer.close()
        await client.aclose()

    async def close_all(self) -> None:
        for key in list(self._opened):
            client, producer = self._opened.pop(key)
            await producer.close()
            await client.aclose()
        if self._worker is not None:
            assert self._consumer is not None
            await self._consumer.close()
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._store_db is not None:
            await self._store_db.close()
        await delete_prefix(self.prefix)

    def commits(self, adapter: Any) -> int | None:
        return None


class _ClickHouseHarness:
    """Opens ClickHouseMessageLog adapters over one database: a fresh one on the server (dropped at the end),
    or a chdb directory."""

    def __init__(self, name: str, url: str, *, server: str | None = None) -> None:
        """``url``: what each adapter opens; ``server``: a URL of the server on which ``url``'s database is
        created first and dropped by ``close_all`` (None for chdb)."""
        self.name = name
        self.url = url
        self._server = server
        self._created = False
        self._opened: list[ClickHouseMessageLog] = []

    def _database(self) -> str:
        return urlsplit(self.url).path.strip("/")

    async def open(self) -> ClickHouseMessageLog:
        if self._server is not None and not self._created:
            await _clickhouse_statement(self._server, f"CREATE DATABASE {self._database()}")
            self._created = True
        log = await ClickHouseMessageLog.open(ClickHouseConfig(url=self.url))
        self._opened.append(log)
        return log

    async def close(self, adapter: ClickHouseMessageLog) -> None:
        self._opened.remove(adapter)
        await adapter.close()

    async def close_all(self) -> None:
        while self._opened:
            await self._opened.pop().close()
        if self._server is not None and self._created:
            await _clickhouse_statement(self._server, f"DROP DATABASE IF EXISTS {self._database()}")

    def commits(self, adapter: ClickHouseMessageLog) -> int | None:
        return adapter.batches


async def _clickhouse_statement(server: str, sql: str) -> None:
    client = clickhouse_connect(server)
    try:
        await client.query(sql)
    finally:
        await client.close()


MESSAGE_LOG_BACKENDS = ["sqlite", "queued", "clickhouse", "chdb"]

MessageLogHarness = _SqliteHarness | _QueuedLogHarness | _ClickHouseHarness


def _make_message_log_backend(name: str, tmp_path: Path) -> MessageLogHarness:
    if name == "sqlite":
        return _SqliteHarness(tmp_path / "t.db", SqliteMessageLog)
    if name == "queued":
        return _QueuedLogHarness(tmp_path)
    if name == "clickhouse":
        server = require("clickhouse")
        parts = urlsplit(server)
        url = urlunsplit((parts.scheme, parts.netloc, f"/flare_test_{uuid.uuid4().hex}", "", ""))
        return _ClickHouseHarness(name, url, server=server)
    if name == "chdb":
        return _ClickHouseHarness(name, f"chdb:///{tmp_path / 'chdb'}")  # chdb:////abs/dir, like sqlite://
    raise AssertionError(f"no harness for message log backend {name!r}")


@pytest.fixture(params=MESSAGE_LOG_BACKENDS)
async def message_log_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageLogHarness]:
    backend = _make_message_log_backend(request.param, tmp_path)
    try:
        yield backend
    finally:
        await backend.close_all()


@pytest.fixture(params=["clickhouse", "chdb"])
async def clickhouse_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[_ClickHouseHarness]:
    """For tests of the ClickHouse adapter's own promises (replays, schema): its two harnesses above."""
    backend = _make_message_log_backend(request.param, tmp_path)
    assert isinstance(backend, _ClickHouseHarness)
    try:
        yield backend
    finally:
        await backend.close_all()


@pytest.fixture
async def message_log(message_log_backend: MessageLogHarness) -> MessageLog:
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


SEQUENCER_BACKENDS = ["memory", "redis"]


def _make_sequencer_backend(name: str) -> Any:
    if name == "memory":
        counters: OrderedDict[str, int] = OrderedDict()
        return _MemoryHarness(lambda seed: MemorySequencer(seed, counters=counters), counters.clear)
    if name == "redis":
        return _RedisHarness(lambda client, prefix, seed: RedisSequencer(client, seed, prefix))
    raise AssertionError(f"no harness for sequencer backend {name!r}")


@pytest.fixture(params=SEQUENCER_BACKENDS)
async def sequencer_backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Opens sequencers over one shared state (``open(seed)``, as nodes sharing Redis) and can ``flush`` it."""
    backend = _make_sequencer_backend(request.param)
    try:
        yield backend
    finally:
        await backend.close_all()


@pytest.fixture
def sequencer_factory(sequencer_backend: Any) -> Callable[[SeedFn], Sequencer]:
    """A function building a sequencer over the backend's shared state from a seed function."""
    factory: Callable[[SeedFn], Sequencer] = sequencer_backend.open
    return factory


@pytest.fixture
def seed_log() -> SeedLog:
    return SeedLog()


@pytest.fixture
def sequencer(sequencer_factory: Callable[[SeedFn], Sequencer], seed_log: SeedLog) -> Sequencer:
    return sequencer_factory(seed_log)


# ---------------------------------------------------------------- route table

ROUTES_BACKENDS = ["memory", "redis"]


def _make_routes_backend(name: str) -> Any:
    if name == "memory":
        state, clock = MemoryRouteState(), ManualClock()
        return _MemoryHarness(
            lambda **options: MemoryRouteTable(state=state, clock=clock, **options), state.clear, clock
        )
    if name == "redis":
        return _RedisHarness(lambda client, prefix, **options: RedisRouteTable(client, prefix, **options))
    raise AssertionError(f"no harness for route table backend {name!r}")


@pytest.fixture(params=ROUTES_BACKENDS)
async def routes_backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Opens route tables over one shared state (``open(ttl_s=...)``, one per node) and can ``flush`` it."""
    backend = _make_routes_backend(request.param)
    try:
        yield backend
    finally:
        await backend.close_all()


# ---------------------------------------------------------------- node bus

BUS_BACKENDS = ["memory", "redis"]


def _make_bus_backend(name: str) -> Any:
    if name == "memory":
        broker = MemoryBroker()
        return _MemoryHarness(lambda: MemoryNodeBus(broker), lambda: None)
    if name == "redis":
        return _RedisHarness(lambda client, prefix: RedisNodeBus(client, prefix))
    raise AssertionError(f"no harness for node bus backend {name!r}")


@pytest.fixture(params=BUS_BACKENDS)
async def bus_backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Opens node buses over one broker (``open()``, one per node)."""
    backend = _make_bus_backend(request.param)
    try:
        yield backend
    finally:
        await backend.close_all()


# ---------------------------------------------------------------- idempotency store

IDEMPOTENCY_BACKENDS = ["memory", "redis"]


def _make_idempotency_backend(name: str) -> Any:
    if name == "memory":
        state, clock = MemoryIdempotencyState(), ManualClock()
        return _MemoryHarness(lambda: MemoryIdempotencyStore(state, clock=clock), state.clear, clock)
    if name == "redis":
        return _RedisHarness(lambda client, prefix: RedisIdempotencyStore(client, prefix))
    raise AssertionError(f"no harness for idempotency store backend {name!r}")


@pytest.fixture(params=IDEMPOTENCY_BACKENDS)
async def idempotency_backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Opens idempotency stores over one shared state (``open()``, one per node), restored as a new
    deployment's is (from an empty log)."""
    backend = _make_idempotency_backend(request.param)
    try:
        assert await backend.open().restore([], complete=True, window_s=600.0)
        yield backend
    finally:
        await backend.close_all()


# ---------------------------------------------------------------- rate limiter

RATELIMIT_BACKENDS = ["memory", "redis"]


def _make_ratelimit_backend(name: str) -> Any:
    if name == "memory":
        state, clock = MemoryRateState(), ManualClock()
        return _MemoryHarness(lambda: MemoryRateLimiter(state, clock=clock), state.clear, clock)
    if name == "redis":
        return _RedisHarness(lambda client, prefix: RedisRateLimiter(client, prefix))
    raise AssertionError(f"no harness for rate limiter backend {name!r}")


@pytest.fixture(params=RATELIMIT_BACKENDS)
async def ratelimit_backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Opens rate limiters over one shared state (``open()``, one per node)."""
    backend = _make_ratelimit_backend(request.param)
    try:
        yield backend
    finally:
        await backend.close_all()


# ---------------------------------------------------------------- Redis-only tests


@pytest.fixture
async def redis_backend() -> AsyncIterator[Any]:
    """For tests of one Redis adapter's own options: ``open(build)`` calls ``build(client, prefix)`` with a
    new client under the test's key prefix; ``flush``/``close_all`` as above."""
    backend = _RedisHarness(lambda client, prefix, build: build(client, prefix))
    try:
        yield backend
    finally:
        await backend.close_all()


# ---------------------------------------------------------------- durable queue


class _QueueHarness:
    """Opens started producers and consumers of one queue backend, and makes topics and groups with names
    unique to the test, so runs sharing one broker never meet. ``close_all`` closes everything it opened."""

    name = ""

    def __init__(self) -> None:
        self._run = uuid.uuid4().hex[:12]
        self._names = 0
        self._admin: Any = None
        self._opened: list[Any] = []
        self.topics: list[str] = []

    def _unique(self, kind: str) -> str:
        self._names += 1
        return f"flare-test-{self._run}-{kind}{self._names}"

    async def admin(self) -> Any:
        """The test's started admin (one per test)."""
        if self._admin is None:
            self._admin = self._new_admin()
            await self._admin.start()
        return self._admin

    def topic_name(self) -> str:
        """A topic name no other test uses (deleted at the end of the test if it was created)."""
        name = self._unique("topic")
        self.topics.append(name)
        return name

    async def topic(self, partitions: int = 4) -> str:
        """A new topic with ``partitions`` partitions."""
        name = self.topic_name()
        assert await (await self.admin()).ensure_topic(name, partitions) == partitions
        return name

    def group(self) -> str:
        return self._unique("group")

    async def producer(self) -> Any:
        producer = self._new_producer()
        await producer.start()
        self._opened.append(producer)
        return producer

    async def consumer(self, topics: list[str], group: str) -> Any:
        consumer = self._new_consumer(topics, group)
        await consumer.start()
        self._opened.append(consumer)
        return consumer

    async def close_all(self) -> None:
        while self._opened:
            await self._opened.pop().close()
        if self._admin is not None:
            await self._cleanup(self._admin)
            await self._admin.close()

    def _new_admin(self) -> Any:
        raise NotImplementedError

    def _new_producer(self) -> Any:
        raise NotImplementedError

    def _new_consumer(self, topics: list[str], group: str) -> Any:
        raise NotImplementedError

    async def _cleanup(self, admin: Any) -> None:
        pass


class _MemoryQueueHarness(_QueueHarness):
    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.broker = MemoryQueueBroker()

    def _new_admin(self) -> Any:
        return MemoryQueueAdmin(self.broker)

    def _new_producer(self) -> Any:
        return MemoryProducer(self.broker)

    def _new_consumer(self, topics: list[str], group: str) -> Any:
        return MemoryConsumer(self.broker, topics, group)


# tansu needs a session timeout of at least a second; a join then takes about one second.
KAFKA_TEST_OPTIONS = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 100, "fetch_max_wait_ms": 50}


class _KafkaQueueHarness(_QueueHarness):
    """Kafka (tansu in CI) at FLARE_TEST_KAFKA_URL; deletes the test's topics at the end."""

    name = "kafka"

    def __init__(self) -> None:
        super().__init__()
        url = require("kafka")
        self.config = dataclasses.replace(kafka_config_from_url(url), **KAFKA_TEST_OPTIONS)

    def _new_admin(self) -> Any:
        return KafkaQueueAdmin(self.config)

    def _new_producer(self) -> Any:
        return KafkaProducer(self.config)

    def _new_consumer(self, topics: list[str], group: str) -> Any:
        return KafkaConsumer(self.config, topics, group)

    async def _cleanup(self, admin: Any) -> None:
        if self.topics:
            await admin.delete_topics(self.topics)


QUEUE_BACKENDS = ["memory", "kafka"]


def _make_queue_backend(name: str) -> _QueueHarness:
    if name == "memory":
        return _MemoryQueueHarness()
    if name == "kafka":
        return _KafkaQueueHarness()
    raise AssertionError(f"no harness for queue backend {name!r}")


@pytest.fixture(params=QUEUE_BACKENDS)
async def queue_backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Opens started producers (``producer()``) and consumers (``consumer(topics, group)``) over one broker,
    with new topics (``topic(partitions)``) and group names (``group()``) per test."""
    backend = _make_queue_backend(request.param)
    try:
        yield backend
    finally:
        await backend.close_all()
