"""Every engine of the distributed mode answers its Python client (scripts/services.sh start brings them up).

Under CI=true a missing engine fails here (tests.services.require), so a green CI run proves it had them all.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import chdb
import pytest
import redis.asyncio as aioredis
from aiochclient import ChClient
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tests.services import require

KAFKA_RECORD_TIMEOUT_S = 10.0


async def test_redis_answers_ping() -> None:
    client = aioredis.from_url(require("redis"))
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_postgres_runs_a_query() -> None:
    connection = await asyncpg.connect(require("postgres"), timeout=5)
    try:
        assert await connection.fetchval("SELECT 1") == 1
        assert await connection.fetchval("SELECT current_database()") == "flare_test"
    finally:
        await connection.close()


async def test_kafka_round_trips_a_record_through_a_consumer_group() -> None:
    bootstrap = urlsplit(require("kafka")).netloc
    topic = f"flare-smoke-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"g:1")
    finally:
        await producer.stop()

    # A group join waits about half the session timeout on tansu: keep it short.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        session_timeout_ms=1000,
        heartbeat_interval_ms=200,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), KAFKA_RECORD_TIMEOUT_S)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"g:1", b"hello")


@pytest.fixture
async def clickhouse() -> AsyncIterator[ChClient]:
    url = urlsplit(require("clickhouse"))
    database = url.path.strip("/") or "default"
    async with aiohttp.ClientSession() as session:
        yield ChClient(session, url=f"http://{url.netloc}/", database=database)


async def test_clickhouse_server_answers_version(clickhouse: ChClient) -> None:
    version = await clickhouse.fetchval("SELECT version()")
    assert isinstance(version, str)
    assert version.startswith("18.16.")  # Debian's server; SQL must also run there (docs/development.md)


async def test_clickhouse_server_keeps_the_latest_version_of_a_row(clickhouse: ChClient) -> None:
    table = f"smoke_{uuid.uuid4().hex}"
    await clickhouse.execute(
        f"CREATE TABLE {table} (conv String, seq UInt64, ver UInt32, body String) "
        "ENGINE = ReplacingMergeTree(ver) PARTITION BY substring(conv, 1, 1) ORDER BY (conv, seq)"
    )
    try:
        await clickhouse.execute(f"INSERT INTO {table} VALUES", ("g:1", 1, 1, "hello"), ("g:1", 2, 1, "world"))
        await clickhouse.execute(f"INSERT INTO {table} VALUES", ("g:1", 1, 2, "hello, edited"))
        final = await clickhouse.fetch(f"SELECT seq, ver, body FROM {table} FINAL ORDER BY seq")
        assert [tuple(row.values()) for row in final] == [(1, 2, "hello, edited"), (2, 1, "world")]
        latest = await clickhouse.fetch(f"SELECT seq, argMax(body, ver) AS body FROM {table} GROUP BY seq ORDER BY seq")
        assert [tuple(row.values()) for row in latest] == [(1, "hello, edited"), (2, "world")]
    finally:
        await clickhouse.execute(f"DROP TABLE {table}")


def test_chdb_runs_current_clickhouse_in_process() -> None:
    version = chdb.query("SELECT version()", "TSV").data().strip()
    major = int(version.split(".")[0])
    assert major >= 24, version


def test_haproxy_is_installed() -> None:
    result = subprocess.run([require("haproxy"), "-v"], capture_output=True, text=True, timeout=10, check=True)
    assert result.stdout.startswith("HAProxy version 2."), result.stdout
