"""Fixtures shared by every test directory: a real PostgreSQL, isolated per test."""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from tests.services import fail_or_skip

POSTGRES_URL = os.environ.get("FLARE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/flare_test")


def require_postgres(url: str = POSTGRES_URL) -> None:
    """Skip when PostgreSQL is unreachable, except in CI (CI=true), where the test fails instead."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        reason = f"PostgreSQL is not reachable at {host}:{port} ({exc}); set FLARE_TEST_POSTGRES_URL"
        fail_or_skip(reason)


@contextlib.asynccontextmanager
async def fresh_postgres_schema() -> AsyncIterator[str]:
    """The test database (created if missing) with a fresh schema as its ``search_path``, dropped afterwards:
    tests running in parallel never see each other's tables."""
    require_postgres()
    import asyncpg

    parts = urllib.parse.urlsplit(POSTGRES_URL)
    try:
        conn = await asyncpg.connect(POSTGRES_URL)
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(urllib.parse.urlunsplit(parts._replace(path="/postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{parts.path.lstrip("/")}"')
        except asyncpg.DuplicateDatabaseError:  # a parallel run created it meanwhile
            pass
        finally:
            await admin.close()
        conn = await asyncpg.connect(POSTGRES_URL)
    schema = f"t_{uuid.uuid4().hex}"
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        query = [*urllib.parse.parse_qsl(parts.query), ("search_path", schema)]
        yield urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


@pytest.fixture
def postgres_schemas() -> Callable[[], contextlib.AbstractAsyncContextManager[str]]:
    """``fresh_postgres_schema`` for fixtures that need PostgreSQL for some parameters only."""
    return fresh_postgres_schema


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_postgres_schema() as url:
        yield url


def _redis_test_keys() -> set[bytes] | None:
    """The keys of the tests' Redis database, or None when Redis does not answer (nothing to check then)."""
    import redis
    from tests.services import service_url

    try:
        client = redis.Redis.from_url(service_url("redis"), socket_connect_timeout=1)
        try:
            return set(client.scan_iter(count=1000))
        finally:
            client.close()
    except redis.RedisError:
        return None


_REDIS_BEFORE = pytest.StashKey[set[bytes] | None]()


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the run itself, not one of its xdist workers
        session.config.stash[_REDIS_BEFORE] = _redis_test_keys()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The tests' Redis database (15) holds no key after the run that it did not hold before: every test that
    writes there cleans up (docs/development.md). A leak fails the run at the end, naming a few keys. Checked
    once, by the run itself after all its workers are done (a worker would see the other workers' keys)."""
    if hasattr(session.config, "workerinput"):
        return
    before = session.config.stash.get(_REDIS_BEFORE, None)
    after = _redis_test_keys()
    if before is None or after is None:
        return
    left = sorted(after - before)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"tests left {len(left)} keys in the tests' Redis database, e.g. {left[:5]}"
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"FAILED (Redis): {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


LOG_TAIL_LINES = 30


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failed test's report ends with the last lines of every ``*.log`` in its ``tmp_path`` (the servers, workers
    and HAProxy a cluster test ran): CI keeps only the report, and a hang is read from what the processes said."""
    report: pytest.TestReport = yield
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and call.when == "call" and isinstance(tmp, Path):
        for log in sorted(tmp.rglob("*.log"))[:12]:
            lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            report.sections.append((f"{log.relative_to(tmp)} (last {len(lines)} lines)", "\n".join(lines)))
    return report
