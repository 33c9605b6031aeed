"""gRPC Subscribe on several nodes: a subscriber on one node sees, once each and in order, the events stored through
any node (Redis, PostgreSQL, Kafka (tansu), ClickHouse and HAProxy as real processes, as in test_cluster.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from flare_im.devcluster import Cluster, Proc, free_port
from flare_im.grpc_api.gen import flare_pb2 as pb
from flare_im.grpc_api.gen import flare_pb2_grpc as pb_grpc
from flare_im.sdk.rest import RestClient

from .engines import ADMIN_KEY, engines

MD = (("x-admin-key", ADMIN_KEY),)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Proc, int]]:
    """A one-node cluster (node 0 behind HAProxy, the store worker) and a second node with gRPC on."""
    async with engines("grpc", {"FLARE_MESSAGES_PARTITIONS": "4"}) as e:
        cluster = Cluster(tmp_path, e.env)
        grpc_port = free_port()
        node = Proc(
            "grpc-node",
            cluster.flare("serve", "--api-port", str(free_port()), "--ws-port", str(free_port())),
            {**e.env, "FLARE_GRPC_PORT": str(grpc_port), "FLARE_NODE_ID": "9", "FLARE_DATA_DIR": str(tmp_path / "g")},
            tmp_path / "grpc-node.log",
        )
        try:
            await asyncio.to_thread(cluster.start, 1, e.haproxy)
            await asyncio.to_thread(node.start, "flare ready")
            yield cluster, node, grpc_port
        finally:
            node.stop()
            cluster.stop()
    log = (tmp_path / "grpc-node.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


async def _next(stream: Any, timeout: float = 15) -> pb.Event:
    event: pb.Event = await asyncio.wait_for(stream.read(), timeout)
    return event


@pytest.mark.timeout(240)  # starting four engines' worth of processes takes most of it on a loaded machine
async def test_a_subscriber_on_one_node_sees_the_sends_of_every_node(nodes: tuple[Cluster, Proc, int]) -> None:
    cluster, _, grpc_port = nodes
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        flare = pb_grpc.FlareStub(channel)
        users = pb.ImportUsersRequest(users=[pb.CreateUserRequest(user_id=u) for u in ("ada", "bo")])
        await flare.ImportUsers(users, metadata=MD, timeout=10)
        tokens = (await flare.IssueTokens(pb.IssueTokensRequest(user_ids=["ada"]), metadata=MD, timeout=10)).tokens

        stream = flare.Subscribe(pb.SubscribeRequest(), metadata=MD)
        assert (await _next(stream)).subscribed.node == "node-9"
        node0 = f"http://127.0.0.1:{cluster.node_ports[0][0]}"  # the other node, not through HAProxy
        async with RestClient(node0, token=tokens["ada"]) as ada:
            first = await ada.send("d:ada:bo", "r1", {"text": "from node 0"})
        body = json.dumps({"text": "from the gRPC node"})
        second = await flare.SendMessage(
            pb.SendMessageRequest(as_user="bo", conv="d:ada:bo", cmid="g1", body_json=body), metadata=MD, timeout=10
        )
        seen = [(await _next(stream)).message for _ in range(2)]
        assert [(m.seq, m.msg_id, m.sender) for m in seen] == [
            (first["seq"], first["msg_id"], "ada"),
            (second.seq, second.msg_id, "bo"),
        ]
        with pytest.raises(TimeoutError):  # once each: the gRPC node's own send is not also tapped
            await _next(stream, timeout=2)
        stream.cancel()

        # The last stream gone, the node stops reading the topic; a new subscriber starts it again.
        again = flare.Subscribe(pb.SubscribeRequest(convs=["d:ada:bo"]), metadata=MD)
        assert (await _next(again)).WhichOneof("event") == "subscribed"
        async with RestClient(node0, token=tokens["ada"]) as ada:
            third = await ada.send("d:ada:bo", "r2", {"text": "again"})
        assert (await _next(again)).message.seq == third["seq"]
        again.cancel()
