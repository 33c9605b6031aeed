"""Several nodes behave as one system (M1-M4, L4): two gateway nodes behind a real HAProxy, a store worker,
Redis, PostgreSQL, the Kafka-protocol broker (tansu) and ClickHouse (18.16), each a real process.

Clients on different nodes chat 1:1 and in a group while one gateway node is killed with SIGKILL: its
clients reconnect through HAProxy to the other node, and every client's synced history equals what was
acked, with no loss and no duplicate. Then the store worker is killed mid-stream and restarted: ClickHouse
holds every acked message exactly once.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flare_im.devcluster import Cluster
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.sdk.client import Disconnected, FlareClient
from flare_im.sdk.rest import RestClient

from .engines import ADMIN_KEY, clickhouse, forget_redis_keys, running_cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    settings = {
        "FLARE_MESSAGES_PARTITIONS": "4",
        "FLARE_ROUTE_TTL_S": "3",
        "FLARE_HEARTBEAT_S": "2",
        "FLARE_HEARTBEAT_TIMEOUT_S": "2",
    }
    async with running_cluster(tmp_path, "cluster", 2, settings) as c:
        yield c


@dataclass
class Chatter:
    """A user's device that sends to its conversations and records every ack."""

    uid: str
    client: FlareClient
    acked: dict[str, set[str]] = field(default_factory=dict)  # conv -> cmids acked
    sent: int = 0
    errors: list[str] = field(default_factory=list)

    async def send_many(self, convs: list[str], count: int, rng: random.Random, pause: float) -> None:
        for i in range(count):
            conv = rng.choice(convs)
            cmid = f"{self.uid}-{i}-{uuid.uuid4().hex[:6]}"
            try:
                await self.client.send(conv, f"{self.uid} #{i}", cmid=cmid, attempts=60)
            except (FlareError, Disconnected, TimeoutError) as exc:  # not acked: may or may not be stored
                self.errors.append(f"{cmid}: {exc!r}")
                continue
            self.acked.setdefault(conv, set()).add(cmid)
            self.sent += 1
            await asyncio.sleep(pause)


async def _rules_and_push_targets_are_shared(cluster: Cluster, token: str) -> None:
    """A filter rule made on one node applies on the other within filter_refresh_s (both read PostgreSQL),
    and a device's push target registered through one node is what the other sees."""
    node0, node1 = (f"http://127.0.0.1:{api}" for api, _ in cluster.node_ports)
    async with (
        RestClient(node0, admin_key=ADMIN_KEY) as admin0,
        RestClient(node1, admin_key=ADMIN_KEY) as admin1,
        RestClient(node0, token=token) as ann0,
        RestClient(node1, token=token) as ann1,
    ):
        await admin0.admin_create_user("eve")
        rule = await admin0.admin_add_filter_rule("forbidden-word", action="block")
        deadline = time.monotonic() + 10
        blocked = False
        while not blocked and time.monotonic() < deadline:
            try:
                # A file, in a conversation of its own: what gets through before the rule applies stays out
                # of the text messages the rest of the test counts.
                file = {"url": "https://files.example/1", "name": "forbidden-word.pdf", "size": 1}
                await ann1.send("d:ann:eve", uuid.uuid4().hex, file, kind="file")
            except FlareError as exc:
                if exc.code != ErrorCode.BLOCKED:
                    raise
                blocked = True
            else:
                await asyncio.sleep(0.2)
        assert blocked, "node 1 never applied the rule made on node 0"
        await admin1.admin_delete_filter_rule(rule["rule_id"])
        assert await admin0.admin_filter_rules() == []

        # An operation retried through the other node (its first ack was lost) is applied once.
        photo = {"url": "https://files.example/2.png", "width": 10, "height": 10}
        sent = await ann0.send("d:ann:eve", "op-target", photo, kind="image")  # not a text: the counts below stay
        path = f"/v1/conversations/d:ann:eve/messages/{sent['seq']}/ops"
        op = {"op": "react", "opid": "op-retried", "emoji": "👍"}
        first = await ann0.request("POST", path, json=op)
        retry = await ann1.request("POST", path, json=op)
        assert (first["duplicate"], retry["duplicate"]) == (False, True)
        assert retry["seq"] == first["seq"]
        history = await ann1.history("d:ann:eve")
        assert [m["kind"] for m in history["items"]].count("react") == 1

        await ann0.register_push("phone", "fcm", "fcm-" + "t" * 40)
        assert [(d["device"], d["provider"]) for d in await ann1.devices()] == [("phone", "fcm")]
        await ann1.unregister_push("phone")
        assert await ann0.devices() == []


@pytest.mark.timeout(300)
async def test_two_nodes_behind_haproxy_survive_kill_9(cluster: Cluster) -> None:
    rng = random.Random(7)
    admin = RestClient(cluster.api_url, admin_key=ADMIN_KEY)
    users = ["ann", "ben", "cat", "dan"]
    tokens = {}
    for u in users:
        await admin.admin_create_user(u, display_name=u)
        tokens[u] = await admin.admin_issue_token(u)
    owner = RestClient(cluster.api_url, token=tokens["ann"])
    group = (await owner.create_group("ops", users[1:], group_id="ops"))["conv"]
    convs = {u: [group, *(f"d:{min(u, v)}:{max(u, v)}" for v in users if v != u)] for u in users}
    chatters = []
    for u in users:
        client = FlareClient(cluster.ws_url, tokens[u], "phone", request_timeout=3.0, max_backoff=0.5)
        await client.connect()
        chatters.append(Chatter(u, client))

    # Phase 1: everybody chats; clients sit on both nodes (round robin), so pushes cross the node bus.
    await asyncio.gather(*(c.send_many(convs[c.uid], 25, rng, 0.005) for c in chatters))
    await asyncio.sleep(0.5)
    for c in chatters:
        assert c.client.pending_messages() > 0, f"{c.uid} received no pushes"

    await _rules_and_push_targets_are_shared(cluster, tokens["ann"])

    # Redis is a cache: it loses every key of this deployment mid-conversation (as a Redis restarted empty).
    # The sequencer re-seeds from the durable log (after the worker caught up), so no seq is reused, and
    # routes come back with the next heartbeats.
    await forget_redis_keys(cluster.env["FLARE_CACHE_URL"], cluster.env["FLARE_CACHE_PREFIX"])
    await asyncio.gather(*(c.send_many(convs[c.uid], 10, rng, 0.005) for c in chatters))

    # Phase 2: node 0 is killed while everybody keeps sending.
    senders = [asyncio.ensure_future(c.send_many(convs[c.uid], 60, rng, 0.01)) for c in chatters]
    await asyncio.sleep(0.3)
    cluster.nodes[0].kill()
    await asyncio.sleep(0.5)
    # Phase 3: the store worker is killed mid-stream and comes back.
    assert cluster.worker is not None
    cluster.worker.kill()
    await asyncio.sleep(0.5)
    cluster.start_worker()
    await asyncio.gather(*senders)
    assert sum(c.client.reconnects for c in chatters) >= 1  # somebody was on the killed node

    # Every client's synced history equals what was acked: nothing lost, nothing twice.
    acked: dict[str, set[str]] = {}
    for c in chatters:
        for conv, cmids in c.acked.items():
            acked.setdefault(conv, set()).update(cmids)
    total = sum(len(v) for v in acked.values())
    for c in chatters:
        await c.client.wait_connected(20)
        for conv in convs[c.uid]:
            history = await c.client.history(conv)
            seqs = [m.seq for m in history]
            # Strictly increasing. A node killed between taking a seq and storing its event leaves a gap
            # (never a reuse); clients pull across it.
            assert seqs == sorted(set(seqs)), f"seqs out of order in {conv} for {c.uid}"
            cmids = [m.cmid for m in history if m.kind == "text"]
            assert len(cmids) == len(set(cmids)), f"duplicate in {conv}"
            assert len(seqs) == len(set(seqs)), f"a seq reused in {conv}"
            assert acked.get(conv, set()) <= set(cmids), f"{c.uid} misses acked messages of {conv}"

    # ClickHouse ends up with every acked message exactly once (the worker caught up after its restart).
    ch = cluster.env["FLARE_MESSAGE_STORE_URL"]
    db = ch.rsplit("/", 1)[1]
    all_acked = set().union(*acked.values())
    deadline = time.monotonic() + 60
    while True:
        stored_cmids = set(clickhouse(ch, f"SELECT DISTINCT cmid FROM {db}.messages WHERE kind = 'text'").split())
        if all_acked <= stored_cmids or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    lost = len(all_acked - stored_cmids)
    # Raw rows, no FINAL: a replayed batch written twice shows as a second row of a (conv, seq) before merges,
    # and a message stored under two seqs as a second row of its (sender, cmid) even after them.
    rows, keys = (int(x) for x in clickhouse(ch, f"SELECT count(), uniqExact(conv, seq) FROM {db}.messages "
                                                      "WHERE kind = 'text'").split())  # fmt: skip
    written_twice = rows - keys
    clickhouse(ch, f"OPTIMIZE TABLE {db}.messages FINAL")
    merged_rows, messages = (int(x) for x in clickhouse(ch, f"SELECT count(), uniqExact(sender, cmid) FROM "
                                                             f"{db}.messages WHERE kind = 'text'").split())  # fmt: skip
    duplicated = merged_rows - messages
    send_errors = [e for c in chatters for e in c.errors]
    reconnects = sum(c.client.reconnects for c in chatters)
    print(  # the note's numbers, each computed above
        f"\ncluster: {total} acked messages, 2 gateway nodes, Redis keys dropped mid-conversation, 1 node + the"
        f" store worker killed with SIGKILL, reconnects={reconnects}, send errors={len(send_errors)},"
        f" in ClickHouse={messages}, lost={lost}, duplicated={duplicated}, rows written twice={written_twice}"
    )
    assert lost == 0, f"{lost} acked messages missing from ClickHouse, e.g. {sorted(all_acked - stored_cmids)[:5]}"
    assert duplicated == 0, "a message (sender, cmid) stored under two seqs"
    assert written_twice == 0, "rows of a (conv, seq) written twice (before merges)"
    assert messages >= total  # unacked sends (cut by the kill) may be stored too; never fewer than acked
    # Every send was retried (same cmid) through the kill until acked: a cluster that refused sends fails here.
    assert not send_errors, f"{len(send_errors)} sends never acked, e.g. {send_errors[:3]}"
    for c in chatters:
        await c.client.close()
    await owner.aclose()
    await admin.aclose()
