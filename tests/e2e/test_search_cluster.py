"""Search with two gateway nodes, a store worker and ClickHouse 18.16 (the engines of test_cluster.py): what is
sent through one node is found through the other once the store worker wrote it; an edit by its new text only,
a recall not at all, and nothing for a user who is not a member."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flare_im.devcluster import Cluster
from flare_im.sdk.rest import RestClient

from .engines import ADMIN_KEY, running_cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    settings = {"FLARE_MESSAGES_PARTITIONS": "2", "FLARE_PUSH_ENABLED": "false"}
    async with running_cluster(tmp_path, "search", 2, settings) as c:
        yield c


async def _found(rest: RestClient, q: str) -> list[int]:
    page: dict[str, Any] = await rest.request("GET", "/v1/search", params={"q": q})
    return [int(i["message"]["seq"]) for i in page["items"]]


async def _expect(rest: RestClient, q: str, expected: list[int], seconds: float = 20) -> None:
    """Polled: the store worker writes ClickHouse some time after the ack."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (got := await _found(rest, q)) != expected and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    assert got == expected


@pytest.mark.timeout(180)
async def test_search_across_nodes_on_clickhouse(cluster: Cluster) -> None:
    (api0, _), (api1, _) = cluster.node_ports
    node0, node1 = f"http://127.0.0.1:{api0}", f"http://127.0.0.1:{api1}"
    async with RestClient(node0, admin_key=ADMIN_KEY) as admin:
        for u in ("alice", "bob", "carol"):
            await admin.admin_create_user(u)
        tokens = await admin.admin_issue_tokens(["alice", "bob", "carol"])
    async with (
        RestClient(node0, token=tokens["alice"]) as alice0,
        RestClient(node1, token=tokens["bob"]) as bob1,
        RestClient(node1, token=tokens["carol"]) as carol1,
    ):
        dm = "d:alice:bob"
        s1 = (await alice0.send(dm, "c1", {"text": "Meet me in 北京 at the Harbour"}))["seq"]
        s2 = (await alice0.send(dm, "c2", {"text": "bring the harbour map"}))["seq"]
        await _expect(bob1, "HARBOUR", [s2, s1])
        await _expect(bob1, "北京", [s1])
        assert await _found(carol1, "harbour") == []

        await alice0.request(
            "POST",
            f"/v1/conversations/{dm}/messages/{s1}/ops",
            json={"op": "edit", "opid": "e1", "body": {"text": "Meet me at the station"}, "base_version": 1},
        )
        await _expect(bob1, "station", [s1])
        await _expect(bob1, "harbour", [s2])
        await alice0.request("POST", f"/v1/conversations/{dm}/messages/{s2}/ops", json={"op": "recall", "opid": "r1"})
        await _expect(bob1, "harbour", [])
        await _expect(alice0, "map", [])
