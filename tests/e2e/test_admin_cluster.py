"""Admin operations with two gateway nodes (the engines of test_cluster.py): a ban made through one node closes
the user's devices on both and is refused on both; a kick of one device reaches the node that holds it; a
broadcast goes through Kafka and reaches devices on either node once; statistics add both nodes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flare_im.devcluster import Cluster

from .conftest import RawWs, raw_authed, raw_connect
from .engines import ADMIN_KEY, running_cluster
from .test_admin import kicked, notices, still_open


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    settings = {
        "FLARE_MESSAGES_PARTITIONS": "2",
        "FLARE_PUSH_ENABLED": "false",
        "FLARE_BROADCAST_PARTITIONS": "2",
        "FLARE_ADMIN_STATS_INTERVAL_S": "1",
        "FLARE_ROUTE_TTL_S": "3",
    }
    async with running_cluster(tmp_path, "admin", 2, settings) as c:
        yield c


class Node:
    def __init__(self, api: int, ws: int) -> None:
        self.api_url, self.ws_url = f"http://127.0.0.1:{api}", f"ws://127.0.0.1:{ws}/v1/ws"
        self.http = httpx.AsyncClient(base_url=self.api_url, timeout=30, headers={"X-Admin-Key": ADMIN_KEY})

    async def ok(self, method: str, path: str, **kw: Any) -> Any:
        reply = await self.http.request(method, path, **kw)
        assert reply.status_code < 300, reply.text
        return reply.json() if reply.content else None


async def connect(node: Node, token: str, device: str) -> RawWs:
    srv: Any = type("Srv", (), {"ws_url": node.ws_url})()
    return await raw_authed(srv, token, device)


async def refused_within(node: Node, token: str, seconds: float) -> int | None:
    """The close code of an ``auth`` refused on ``node``, retried until the node has learned of the ban."""
    deadline = time.monotonic() + seconds
    while True:
        ws = await raw_connect(node.ws_url)
        ws.send_text(json.dumps({"type": "auth", "id": 1, "token": token, "device": "probe"}))
        reply = await ws.recv_json()
        if reply["type"] == "error":
            return await ws.wait_closed()
        assert time.monotonic() < deadline, "the other node still accepts the banned user"
        assert ws.transport is not None
        ws.transport.disconnect()
        await asyncio.sleep(0.2)


async def test_admin_operations_reach_every_node(cluster: Cluster) -> None:
    n0, n1 = (Node(api, ws) for api, ws in cluster.node_ports)
    try:
        users = ["alice", "bob", "carol"]
        await n0.ok("POST", "/v1/admin/users:batch", json={"users": [{"user_id": u} for u in users]})
        tokens = (await n0.ok("POST", "/v1/admin/tokens", json={"user_ids": users}))["tokens"]
        alice0 = await connect(n0, tokens["alice"], "phone")
        alice1 = await connect(n1, tokens["alice"], "laptop")
        bob1 = await connect(n1, tokens["bob"], "phone")
        carol0 = await connect(n0, tokens["carol"], "phone")

        deadline = time.monotonic() + 5  # the other node's sample is at most admin_stats_interval_s old
        while (stats := await n1.ok("GET", "/v1/admin/stats"))["online_devices"] != 4:
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.2)
        assert stats["online_devices"] == 4
        assert len(stats["nodes"]) == 2
        assert sorted(n["connections"] for n in stats["nodes"]) == [2, 2]

        # A ban through node 0 closes alice's devices on both nodes at once; node 1 refuses her too.
        ban = await n0.ok("POST", "/v1/admin/users/alice/ban", json={"reason": "abuse"})
        assert ban["kicked"] == 1  # the device on node 0; node 1 closes its own
        for ws in (alice0, alice1):
            frame, code = await kicked(ws)
            assert (frame["code"], code) == (4010, 4010)
            assert "abuse" in frame["reason"]
        await still_open(bob1)
        assert await refused_within(n1, tokens["alice"], 3.0) == 4010
        me = await n1.http.get("/v1/me", headers={"Authorization": f"Bearer {tokens['alice']}"})
        assert me.status_code == 401

        # Unbanned through node 1: node 0 lets her in again within admin_refresh_s.
        await n1.ok("DELETE", "/v1/admin/users/alice/ban")
        deadline = time.monotonic() + 3
        while True:
            me = await n0.http.get("/v1/me", headers={"Authorization": f"Bearer {tokens['alice']}"})
            if me.status_code == 200:
                break
            assert time.monotonic() < deadline, me.text
            await asyncio.sleep(0.2)

        # Kicking one device through node 0 closes it on node 1 and leaves her other device.
        laptop = await connect(n1, tokens["alice"], "laptop")
        phone = await connect(n0, tokens["alice"], "phone")
        await n0.ok("POST", "/v1/admin/users/alice/devices/laptop/kick")
        assert (await kicked(laptop))[1] == 4011
        await still_open(phone)

        # A broadcast through Kafka reaches devices on both nodes, each once.
        started = await n1.ok(
            "POST", "/v1/admin/broadcasts", json={"text": "cluster notice", "user_ids": ["bob", "carol"]}
        )
        deadline = time.monotonic() + 60
        while (await n0.ok("GET", f"/v1/admin/broadcasts/{started['broadcast_id']}"))["state"] != "done":
            assert time.monotonic() < deadline, "broadcast not delivered"
            await asyncio.sleep(0.2)
        assert len(await notices(bob1, 1.0)) == 1
        assert len(await notices(carol0, 1.0)) == 1
        # Active conversations are counted in ClickHouse (once the store worker wrote the messages there).
        for i, conv in enumerate(["d:bob:carol", "d:alice:bob", "d:bob:carol"]):
            bearer = {"Authorization": f"Bearer {tokens['bob']}"}
            body = {"cmid": f"a{i}", "body": {"text": "x"}}
            sent = await n0.http.post(f"/v1/conversations/{conv}/messages", json=body, headers=bearer)
            assert sent.status_code == 200, sent.text
        deadline = time.monotonic() + 20
        while (stats := await n1.ok("GET", "/v1/admin/stats", params={"window_s": 600}))["active_conversations"] < 4:
            assert time.monotonic() < deadline, stats  # the two above and the notices' d:bob:system, d:carol:system
            await asyncio.sleep(0.3)
        assert stats["active_conversations"] == 4
        audit = (await n1.ok("GET", "/v1/admin/audit"))["items"]
        assert {e["action"] for e in audit} >= {"POST /v1/admin/users/{user_id}/ban", "POST /v1/admin/broadcasts"}
    finally:
        await n0.http.aclose()
        await n1.http.aclose()
