"""The cold tier in a cluster: two gateway nodes, the store worker, ClickHouse 18.16, PostgreSQL and S3 (s3rver).
History is recorded page by page through each node, two ``flare worker archive`` processes run at once, and
afterwards ClickHouse holds none of the rows while every page, over REST and over the WebSocket, through
either node, is the same bytes as before; an archived message can still be recalled; verify checks the parts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from tests.contract.test_object_store_contract import s3_url, wipe_bucket

from flare_im.backends.objects.base import open_object_store
from flare_im.devcluster import Cluster, Proc, free_port
from flare_im.sdk.client import FlareClient
from flare_im.sdk.rest import RestClient

from .engines import ADMIN_KEY, clickhouse, running_cluster

DM = "d:alice:bob"
N = 120
ROWS = "flare_archive_rows_total "


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    url = s3_url(f"arch-{uuid.uuid4().hex[:20]}", "flare")
    settings = {
        "FLARE_MESSAGES_PARTITIONS": "2",
        "FLARE_PUSH_ENABLED": "false",
        "FLARE_L0_KEEP": "10",  # Redis holds the newest 10: the other pages come from the store, then the archive
        "FLARE_OBJECT_STORE_URL": url,
        "FLARE_ARCHIVE_AFTER_DAYS": "0",  # every stored message is old enough
        "FLARE_ARCHIVE_INTERVAL_S": "2",
        "FLARE_ARCHIVE_REFRESH_S": "0.5",
        "FLARE_ARCHIVE_GRACE_S": "1.5",
    }
    try:
        async with running_cluster(tmp_path, "archive", 2, settings) as c:
            yield c
    finally:
        store = await open_object_store(url, "")
        try:
            await wipe_bucket(store)
        finally:
            await store.close()


def _ch(cluster: Cluster, sql: str) -> str:
    url = cluster.env["FLARE_MESSAGE_STORE_URL"]
    return clickhouse(url, sql.replace("messages", url.rsplit("/", 1)[1] + ".messages")).strip()


async def _until(check: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def _pages(api_url: str, ws_url: str, token: str) -> list[Any]:
    out: list[Any] = []
    queries: list[dict[str, int]] = [{}, {"limit": 500}]
    for limit in (1, 9, 50):
        queries += [{"after": a, "limit": limit} for a in [*range(0, N, 11), N - 1, N]]
        queries += [{"before": b, "limit": limit} for b in [*range(2, N, 13), N, N + 1]]
    async with httpx.AsyncClient(base_url=api_url, headers={"authorization": f"Bearer {token}"}) as http:
        for q in queries:
            reply = await http.get(f"/v1/conversations/{DM}/messages", params=q)
            assert reply.status_code == 200, reply.text
            out.append(reply.content)
    client = FlareClient(ws_url, token, "puller")
    await client.connect()
    try:
        for q in queries:
            page = await client.pull(DM, **q)
            out.append(msgspec.json.encode(msgspec.structs.replace(page, id=0)))
    finally:
        await client.close()
    async with httpx.AsyncClient(base_url=api_url, headers={"authorization": f"Bearer {token}"}) as http:
        listing = await http.get("/v1/conversations", params={"recent": 5})  # last: see the test
        assert listing.status_code == 200
        out.append(listing.content)
    return out


def _flare_archive(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flare_im.cli", "archive", *args],
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(300)
async def test_history_is_the_same_after_the_cluster_archives_it(cluster: Cluster, tmp_path: Path) -> None:
    nodes = [(f"http://127.0.0.1:{api}", f"ws://127.0.0.1:{ws}/v1/ws") for api, ws in cluster.node_ports]
    async with RestClient(cluster.api_url, admin_key=ADMIN_KEY) as admin:
        for uid in ("alice", "bob"):
            await admin.admin_create_user(uid)
        tokens = await admin.admin_issue_tokens(["alice", "bob"])
    alice = FlareClient(nodes[0][1], tokens["alice"], "phone")
    await alice.connect()
    try:
        for i in range(N - 3):
            await alice.send(DM, f"message {i}")
        await alice.edit(DM, 2, "edited", base_version=1)
        await alice.react(DM, 4, "👍")
        await alice.recall(DM, 6)
    finally:
        await alice.close()

    async def stored() -> bool:
        return _ch(cluster, f"SELECT uniqExact(seq) FROM messages WHERE conv = '{DM}'") == str(N)

    await _until(stored)

    async def listings() -> list[bytes]:
        out = []
        for api, _ in nodes:
            async with httpx.AsyncClient(base_url=api, headers={"authorization": f"Bearer {tokens['bob']}"}) as h:
                out.append((await h.get("/v1/conversations")).content)
        return out

    # A list's version is min(its newest entry's, the node's safe clock), which catches up with the last write
    # a moment later on the node that made it: wait until the lists stop changing by themselves.
    seen = await listings()
    while True:
        await asyncio.sleep(1.5)
        if (now := await listings()) == seen:
            break
        seen = now
    before = [await _pages(api, ws, tokens["bob"]) for api, ws in nodes]
    assert before[0][:-1] == before[1][:-1]  # each node's history pages (conversation lists: compared per node)

    ports = [free_port() for _ in range(2)]
    workers = [  # two at once: a pass holds PostgreSQL's advisory lock, the other worker skips that round
        Proc(
            f"archive{i}",
            cluster.flare("worker", "archive"),
            {**cluster.env, "FLARE_METRICS_PORT": str(port)},
            tmp_path / f"archive{i}.log",
        )
        for i, port in enumerate(ports)
    ]
    try:
        for w in workers:
            w.start("flare worker ready archive")

        async def archived() -> bool:
            return _ch(cluster, "SELECT count() FROM messages") == "0"

        await _until(archived)

        async def counted() -> bool:  # the pass ends (and counts) a moment after the rows are gone
            rows = 0
            async with httpx.AsyncClient() as http:
                for port in ports:
                    assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                    metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                    rows += sum(int(float(line.split()[1])) for line in metrics.splitlines() if line.startswith(ROWS))
            assert rows <= N  # archived once, by one of the two
            return rows == N

        await _until(counted, 20)
        status = _flare_archive(cluster, "status")
        assert status.returncode == 0, status.stderr
        assert "hot rows (ClickHouse, every version): 0" in status.stdout
        assert f"archived: 1 parts, {N} rows" in status.stdout
        assert "not yet removed" not in status.stdout

        for (api, ws), pages in zip(nodes, before, strict=True):  # every page, either node, the same bytes
            assert await _pages(api, ws, tokens["bob"]) == pages

        alice = FlareClient(nodes[1][1], tokens["alice"], "phone")
        await alice.connect()
        try:
            ack = await alice.recall(DM, 3)  # an archived message
            assert ack.seq == N + 1

            async def recalled() -> bool:
                [m] = (await alice.pull(DM, after=2, limit=1)).items
                return (m.seq, m.state, m.body) == (3, "recalled", {})

            await _until(recalled, 30)
            untouched = (await alice.pull(DM, after=0, limit=6)).items
            assert [m.body.get("text") for m in untouched] == [
                "message 0",
                "edited",
                None,
                "message 3",
                "message 4",
                None,
            ]
            assert untouched[3].reactions == {"👍": ["alice"]}
        finally:
            await alice.close()

        # The recall wrote new hot rows, which the workers archive in a new part and then remove from ClickHouse:
        # stop them only once that is done, or a part can be left between its upload and its removal.
        async def settled() -> bool:
            if _ch(cluster, "SELECT count() FROM messages") != "0":
                return False
            conn = await asyncpg.connect(cluster.env["FLARE_DATABASE_URL"])
            try:
                return bool(await conn.fetchval("SELECT count(*) FROM archive_parts WHERE removed_at = 0") == 0)
            finally:
                await conn.close()

        await _until(settled, 30)
    finally:
        for w in workers:
            w.stop()
    for w in workers:
        log = w.log_path.read_text()
        assert "Traceback" not in log, log
        assert "archive pass failed" not in log, log

    verify = _flare_archive(cluster, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    conn = await asyncpg.connect(cluster.env["FLARE_DATABASE_URL"])
    try:
        assert await conn.fetchval("SELECT count(*) FROM archive_parts WHERE removed_at = 0") == 0
    finally:
        await conn.close()
