"""Benchmark of the conversation-list sync (SyncService.conversations): a new device restoring a long list.

Run: .venv/bin/python bench/conversation_sync.py [conversations] [rounds] [database_url]
One user in ``conversations`` conversations (half direct, half groups of 5), each with a few messages and one
deleted "for me"; then ``rounds`` full syncs of the whole list in pages of 100, with the newest 5 messages of
each entry, on a node that has cached none of them (the first round) and then on the same node again. The
relational store is PostgreSQL when ``database_url`` is given (a scratch database is made
and dropped; ``scripts/services.sh start`` runs one), else the embedded SQLite file.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid

import asyncpg

from flare_im.app import build_node
from flare_im.config import Settings
from flare_im.migrate import migrate


async def run(n: int, rounds: int, database_url: str | None) -> None:
    scratch = None
    if database_url:
        scratch = f"flare_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(database_url)
        await admin.execute(f"CREATE DATABASE {scratch}")
        await admin.close()
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            values = {"data_dir": data_dir}
            if scratch and database_url:
                values["database_url"] = database_url.rsplit("/", 1)[0] + f"/{scratch}"
            settings = Settings.load(values, environ={})
            if scratch:
                await migrate(settings, apply=True)
            node = await build_node(settings)
            try:
                await _fill(node, n)
            finally:
                await node.close()
            # Another node (or this one restarted): nothing of these conversations is cached.
            node = await build_node(settings)
            try:
                await _measure(node, n, rounds, "PostgreSQL" if scratch else "SQLite")
            finally:
                await node.close()
    finally:
        if scratch and database_url:
            admin = await asyncpg.connect(database_url)
            await admin.execute(f"DROP DATABASE {scratch} WITH (FORCE)")
            await admin.close()


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
    url = args[2] if len(args) > 2 else None
    asyncio.run(run(count, rounds, url))
