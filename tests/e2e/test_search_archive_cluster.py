"""Search reaches the cold tier in a cluster (two gateway nodes, the store worker, ClickHouse 18.16, PostgreSQL,
S3): after `flare archive run` removed every row from ClickHouse, both nodes find the archived messages with the
same permission rules, result shape and cursor; an edit made after archiving is found by its new text only, a
recalled archived message not at all, and a member who joined later or a non-member never sees them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.contract.test_object_store_contract import s3_url, wipe_bucket

from flare_im.backends.objects.base import open_object_store
from flare_im.devcluster import Cluster
from flare_im.sdk.rest import RestClient

from .engines import ADMIN_KEY, clickhouse, running_cluster

DM = "d:alice:bob"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    url = s3_url(f"srch-{uuid.uuid4().hex[:20]}", "flare")
    settings = {
        "FLARE_MESSAGES_PARTITIONS": "2",
        "FLARE_PUSH_ENABLED": "false",
        "FLARE_OBJECT_STORE_URL": url,
        "FLARE_ARCHIVE_REFRESH_S": "0.5",
        "FLARE_ARCHIVE_GRACE_S": "1.5",
    }
    try:
        async with running_cluster(tmp_path, "searcharch", 2, settings) as c:
            yield c
    finally:
        store = await open_object_store(url, "")
        try:
            await wipe_bucket(store)
        finally:
            await store.close()


def _ch(cluster: Cluster, sql: str) -> str:
    url = cluster.env["FLARE_MESSAGE_STORE_URL"]
    db = url.rsplit("/", 1)[1]
    return clickhouse(url, sql.replace("FROM ", f"FROM {db}.")).strip()


async def _search(rest: RestClient, q: str, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = await rest.request("GET", "/v1/search", params={"q": q, **params})
    return out


async def _found(rest: RestClient, q: str, **params: Any) -> list[tuple[str, int]]:
    return [(i["message"]["conv"], i["message"]["seq"]) for i in (await _search(rest, q, **params))["items"]]


async def _expect(rest: RestClient, q: str, expected: list[tuple[str, int]], seconds: float = 30) -> None:
    """Polled: the store worker writes ClickHouse (and applies operations) some time after the ack."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (got := await _found(rest, q)) != expected and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    assert got == expected


@pytest.mark.timeout(300)
async def test_archived_messages_are_searchable_in_a_cluster(cluster: Cluster) -> None:
    (api0, _), (api1, _) = cluster.node_ports
    node0, node1 = f"http://127.0.0.1:{api0}", f"http://127.0.0.1:{api1}"
    async with RestClient(node0, admin_key=ADMIN_KEY) as admin:
        for u in ("alice", "bob", "carol", "dave"):
            await admin.admin_create_user(u)
        tokens = await admin.admin_issue_tokens(["alice", "bob", "carol", "dave"])
    async with (
        RestClient(node0, token=tokens["alice"]) as alice0,
        RestClient(node1, token=tokens["bob"]) as bob1,
        RestClient(node0, token=tokens["bob"]) as bob0,
        RestClient(node1, token=tokens["carol"]) as carol1,
        RestClient(node1, token=tokens["dave"]) as dave1,
    ):
        group = await alice0.create_group("Crew", ["bob"])
        team, gid = group["conv"], group["group_id"]
        seqs = {}
        for name, conv, text in [
            ("map", DM, "the harbour map"),
            ("tour", DM, "harbour tour tickets"),
            ("edit", DM, "harbour meeting moved"),
            ("team", team, "crew harbour briefing"),
            ("cn", DM, "我们在北京的港口见面"),
        ]:
            seqs[name] = int((await alice0.send(conv, f"c-{name}", {"text": text}))["seq"])
        found = [(team, seqs["team"]), (DM, seqs["edit"]), (DM, seqs["tour"]), (DM, seqs["map"])]
        await _expect(bob1, "harbour", found)

        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "flare_im.cli", "archive", "run", "--older-than", "0"],
            env={**os.environ, **cluster.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert _ch(cluster, "SELECT count() FROM messages") == "0"

        for bob in (bob0, bob1):  # every node, once it re-read the catalog
            await _expect(bob, "HARBOUR", found)
            assert await _found(bob, "北京") == [(DM, seqs["cn"])]
        [item] = (await _search(bob1, "map"))["items"]
        assert item["message"]["body"] == {"text": "the harbour map"}
        assert (item["message"]["sender"], item["snippet"], item["highlights"]) == (
            "alice",
            "the harbour map",
            [[12, 15]],
        )
        got: list[tuple[str, int]] = []
        cursor = None
        while True:
            page = await _search(bob1, "harbour", limit=1, **({"cursor": cursor} if cursor else {}))
            got += [(i["message"]["conv"], i["message"]["seq"]) for i in page["items"]]
            if (cursor := page["next"]) is None:
                break
        assert got == found
        assert await _found(carol1, "harbour") == []  # not a member
        await alice0.add_members(gid, ["dave"])  # joined after the archived messages: none of them
        assert await _found(dave1, "harbour") == []

        await alice0.request(
            "POST",
            f"/v1/conversations/{DM}/messages/{seqs['edit']}/ops",
            json={"op": "edit", "opid": "e1", "body": {"text": "meeting at the station"}, "base_version": 1},
        )
        await alice0.request(
            "POST", f"/v1/conversations/{DM}/messages/{seqs['tour']}/ops", json={"op": "recall", "opid": "r1"}
        )
        for bob in (bob0, bob1):
            await _expect(bob, "harbour", [(team, seqs["team"]), (DM, seqs["map"])])
            await _expect(bob, "station", [(DM, seqs["edit"])])
        await _expect(alice0, "tickets", [])
        await _expect(alice0, "moved", [])
        [edited] = (await _search(bob1, "station"))["items"]
        assert edited["message"]["version"] == 2
        assert await _found(carol1, "station") == []
