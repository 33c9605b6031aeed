"""Blocks and mutes with two gateway nodes (the engines of test_cluster.py): a change made through one node applies
on the other at once, by the change notice on the node bus (the revision poll is set far beyond the test)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from flare_im.devcluster import Cluster
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.sdk.rest import RestClient

from .engines import ADMIN_KEY, running_cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    settings = {
        "FLARE_MESSAGES_PARTITIONS": "2",
        "FLARE_PUSH_ENABLED": "false",
        "FLARE_ROUTE_TTL_S": "3",
        "FLARE_SAFETY_REFRESH_S": "600",  # only the bus notice can carry a change within the test
    }
    async with running_cluster(tmp_path, "safety", 2, settings) as c:
        yield c


async def refused_within(send: Callable[[str], Awaitable[object]], seconds: float) -> FlareError:
    """Send until the send is refused (another node's change arriving); fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await send(uuid.uuid4().hex)
        except FlareError as exc:
            return exc
        assert time.monotonic() < deadline, "the other node never applied the change"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(180)
async def test_block_and_mute_made_on_one_node_apply_on_the_other(cluster: Cluster) -> None:
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
        await bob1.send("d:alice:bob", "before", {"text": "hi"})  # node 1 caches the conversation
        group = await alice0.create_group("g", ["bob", "carol"])
        await carol1.send(group["conv"], "before-g", {"text": "hi all"})  # node 1 caches the group

        started = time.monotonic()
        await alice0.request("PUT", "/v1/me/blocks/bob")
        err = await refused_within(lambda c: bob1.send("d:alice:bob", c, {"text": "still there?"}), 5)
        assert (err.code, err.detail) == (ErrorCode.FORBIDDEN, {"reason": "blocked"})
        assert time.monotonic() - started < 5

        await alice0.request("PUT", f"/v1/groups/{group['group_id']}/mutes/carol", json={})
        err = await refused_within(lambda c: carol1.send(group["conv"], c, {"text": "me?"}), 5)
        assert err.detail is not None
        assert err.detail["reason"] == "muted"

        await alice0.request("DELETE", "/v1/me/blocks/bob")
        deadline = time.monotonic() + 5
        while True:  # and the unblock too
            try:
                await bob1.send("d:alice:bob", uuid.uuid4().hex, {"text": "thanks"})
                break
            except FlareError:
                assert time.monotonic() < deadline, "node 1 never applied the unblock"
                await asyncio.sleep(0.05)
