"""A test's own share of the cluster engines (PostgreSQL, ClickHouse, Redis, the Kafka-protocol broker): a
database in each, a Redis key prefix, and every Kafka topic and consumer group named for the run.

Cluster tests run side by side under pytest-xdist. Two of them once shared the broadcast topic's consumer group:
one test's node then waited, at start, for a rebalance that another test's killed members held up, and never
became ready. Nothing is shared here, and everything is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.services import require

from flare_im.backends.queue.kafka import KafkaQueueAdmin, kafka_config_from_url
from flare_im.devcluster import Cluster

SECRET = "cluster-test-secret-0123456789abcdef"
ADMIN_KEY = "cluster-test-admin-key"

# Every Kafka topic and consumer group a cluster process uses (config.py): (topic setting, group setting).
KAFKA_NAMES = (
    ("FLARE_MESSAGES_TOPIC", "FLARE_STORE_GROUP"),
    ("FLARE_PUSH_TOPIC", "FLARE_PUSH_GROUP"),
    ("FLARE_BROADCAST_TOPIC", "FLARE_BROADCAST_GROUP"),
    ("FLARE_WEBHOOK_TOPIC", "FLARE_WEBHOOK_GROUP"),
)


@dataclass
class Engines:
    run: str
    env: dict[str, str]  # the settings of every process of this test's cluster
    redis_url: str
    postgres_url: str
    kafka_url: str
    clickhouse_url: str
    haproxy: str


async def create_database(postgres_url: str, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(postgres_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def clickhouse(url: str, sql: str) -> str:
    host = url.split("://", 1)[1].split("/", 1)[0]
    request = urllib.request.Request(f"http://{host}/", data=sql.encode())
    with urllib.request.urlopen(request, timeout=30) as reply:
        body: bytes = reply.read()
        return body.decode()


async def forget_redis_keys(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def drop_topics(kafka_url: str, topics: list[str]) -> None:
    admin = KafkaQueueAdmin(kafka_config_from_url(kafka_url))
    with contextlib.suppress(Exception):  # tidying only: a broker that keeps them is no failure of a test
        await admin.start()
        await admin.delete_topics(topics)
    with contextlib.suppress(Exception):
        await admin.close()


@contextlib.asynccontextmanager
async def engines(name: str, settings: dict[str, str] | None = None) -> AsyncIterator[Engines]:
    """This test's databases, prefix, topics and groups, as the settings of its cluster (``settings`` on top);
    all dropped on exit."""
    redis_url, postgres_url = require("redis"), require("postgres")
    kafka_url, clickhouse_url, haproxy = require("kafka"), require("clickhouse"), require("haproxy")
    run = uuid.uuid4().hex[:10]
    db = f"flare_{name}_{run}"
    database_url = await create_database(postgres_url, db)
    try:
        clickhouse(clickhouse_url, f"CREATE DATABASE {db}")
        ch_host = clickhouse_url.split("://", 1)[1].split("/", 1)[0]
        env = {
            "FLARE_DATABASE_URL": database_url,
            "FLARE_MESSAGE_STORE_URL": f"clickhouse://{ch_host}/{db}",
            "FLARE_CACHE_URL": redis_url,
            "FLARE_CACHE_PREFIX": f"flare-{run}:",
            "FLARE_QUEUE_URL": kafka_url,
            "FLARE_JWT_SECRET": SECRET,
            "FLARE_ADMIN_KEY": ADMIN_KEY,
            "FLARE_LOG_LEVEL": "WARNING",
        }
        env.update(kafka_names(run))
        env.update(settings or {})
        yield Engines(run, env, redis_url, postgres_url, kafka_url, clickhouse_url, haproxy)
    finally:
        await forget_redis_keys(redis_url, f"flare-{run}:")
        await drop_database(postgres_url, db)
        clickhouse(clickhouse_url, f"DROP DATABASE IF EXISTS {db}")
        await drop_topics(kafka_url, [_topic(topic, run) for topic, _ in KAFKA_NAMES])


def kafka_names(run: str) -> dict[str, str]:
    """Settings naming every Kafka topic and consumer group for ``run`` alone."""
    names = {}
    for topic, group in KAFKA_NAMES:
        names[topic], names[group] = _topic(topic, run), f"flare-{_kind(topic)}-{run}"
    return names


def _kind(topic_setting: str) -> str:
    return topic_setting.removeprefix("FLARE_").removesuffix("_TOPIC").lower()


def _topic(topic_setting: str, run: str) -> str:
    return f"flare.{_kind(topic_setting)}.{run}"


@contextlib.asynccontextmanager
async def running_cluster(
    tmp_path: Path, name: str, nodes: int, settings: dict[str, str] | None = None
) -> AsyncIterator[Cluster]:
    """``nodes`` gateway nodes, a store worker and HAProxy on this test's own engines (``engines``)."""
    async with engines(name, settings) as e:
        cluster = Cluster(tmp_path, e.env)
        try:
            await asyncio.to_thread(cluster.start, nodes, e.haproxy)
            yield cluster
        finally:
            cluster.stop()


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of ``pid``'s sockets (Linux /proc): which worker process a connection came from."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
