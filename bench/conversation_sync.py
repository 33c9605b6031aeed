"""Benchmark of the conversation-list sync (SyncService.conversations): a new device restoring a long list.

Run: .venv/bin/python bench/conversation_sync.py [conversations] [rounds] [sqlite|postgres|cluster]
One user in ``conversations`` conversations (half direct, half groups of 5), each with a few messages and one
deleted "for me"; then ``rounds`` full syncs of the whole list in pages of 100, with the newest 5 messages of
each entry, on a node that has cached none of them (the first round) and then on the same node again.
``postgres``: the relational store is a scratch PostgreSQL database. ``cluster``: a node in distributed
mode, also with Redis (L0), Kafka and ClickHouse scratch names. The engines are those of
``scripts/services.sh start`` (its ``env`` URLs).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import asyncpg

from flare_im.app import build_node
from flare_im.config import Settings
from flare_im.devcluster import wait_for_line
from flare_im.migrate import migrate


async def run(n: int, rounds: int, mode: str) -> None:
    run_id = uuid.uuid4().hex[:8]
    scratch = f"flare_bench_{run_id}"
    postgres = os.environ.get("FLARE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/flare_test")
    clickhouse = os.environ.get("FLARE_TEST_CLICKHOUSE_URL", "clickhouse://127.0.0.1:18123/default")
    ch_http = "http://" + clickhouse.split("://", 1)[1].split("/", 1)[0]
    values: dict[str, object] = {}
    if mode in ("postgres", "cluster"):
        admin = await asyncpg.connect(postgres)
        await admin.execute(f"CREATE DATABASE {scratch}")
        await admin.close()
        values["database_url"] = postgres.rsplit("/", 1)[0] + f"/{scratch}"
    if mode == "cluster":
        _clickhouse(ch_http, f"CREATE DATABASE {scratch}")
        values |= {
            "cache_url": os.environ.get("FLARE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
            "cache_prefix": f"{scratch}:",
            "queue_url": os.environ.get("FLARE_TEST_KAFKA_URL", "kafka://127.0.0.1:19092"),
            "messages_topic": f"{scratch}.messages",
            "message_store_url": clickhouse.rsplit("/", 1)[0] + f"/{scratch}",
            "store_group": f"{scratch}-store",
        }
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings.load({"data_dir": data_dir, **values}, environ={})
            if "database_url" in values:
                await migrate(settings, apply=True)
            worker = _start_worker(values) if mode == "cluster" else None
            node = await build_node(settings)
            try:
                await _fill(node, n)
            finally:
                await node.close()
            # Another node (or this one restarted): nothing of these conversations is cached.
            node = await build_node(settings)
            try:
                await _measure(node, n, rounds, mode)
            finally:
                await node.close()
                if worker is not None:
                    worker.terminate()
                    worker.wait(30)
    finally:
        if "database_url" in values:
            admin = await asyncpg.connect(postgres)
            await admin.execute(f"DROP DATABASE {scratch} WITH (FORCE)")
            await admin.close()
        if mode == "cluster":
            _clickhouse(ch_http, f"DROP DATABASE IF EXISTS {scratch}")


def _start_worker(values: dict[str, object]) -> subprocess.Popen[bytes]:
    """``flare worker store`` with the same settings: sends wait for it to confirm what L0 cannot."""
    env = {**os.environ, "FLARE_LOG_LEVEL": "WARNING"} | {f"FLARE_{k.upper()}": str(v) for k, v in values.items()}
    command = [sys.executable, "-m", "flare_im.cli", "worker", "store"]
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    if wait_for_line(worker, b"flare worker ready", 60) is None:
        worker.kill()
        raise RuntimeError("the store worker did not start")
    return worker


def _clickhouse(url: str, sql: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, data=sql.encode()), timeout=30).read()


async def _fill(node: object, n: int) -> None:
    api = node.api  # type: ignore[attr-defined]
    router = node.router  # type: ignore[attr-defined]
    await api.users.create_by_admin("me")
    for i in range(n // 2):
        peer = f"p{i:04d}"
        await api.users.create_by_admin(peer)
        conv = f"d:me:{peer}"
        for k in range(3):
            await router.send("me", conv, f"{conv}-{k}", "text", {"text": f"hello {k}"})
        await api.operations.hide("me", "", conv, [1])
    for i in range(n - n // 2):
        info = await api.groups.create("me", name=f"group {i}", members=[f"p{j:04d}" for j in range(4)])
        for k in range(3):
            await router.send("me", info.conv, f"{info.conv}-{k}", "text", {"text": f"hi {k}"})
        await api.operations.hide("me", "", info.conv, [2])


async def _measure(node: object, n: int, rounds: int, engine: str) -> None:
    api = node.api  # type: ignore[attr-defined]
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        since, entries = 0, 0
        while True:
            page = await api.sync.conversations("me", since=since, limit=100, strategy="incremental", recent=5)
            entries += len(page.items)
            if not page.more:
                break
            since = page.version
        times.append(time.perf_counter() - start)
        assert entries >= n, entries
    first, median = times[0], statistics.median(times[1:] or times)
    print(
        f"{engine}: {n} conversations, full list sync with recent=5 in pages of 100:"
        f" first (nothing cached) {first * 1000:.0f} ms, then median {median * 1000:.0f} ms"
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    count = int(args[0]) if args else 400
    rounds = int(args[1]) if len(args) > 1 else 5
    engine = args[2] if len(args) > 2 else "sqlite"
    if engine not in ("sqlite", "postgres", "cluster"):
        sys.exit(f"unknown mode {engine!r}: sqlite, postgres or cluster")
    asyncio.run(run(count, rounds, engine))
