"""After-events in a cluster, at least once across a worker killed mid-batch (issue 14, docs/integration.md §5):
two gateway nodes publish after_send to the Kafka webhooks topic, two `flare worker webhooks` processes share its
consumer group, and a real HTTP receiver in the test verifies every request's signature and counts events by id.

The receiver answers the worker to be killed a few times, then holds its requests unanswered: that worker is
mid-batch, some deliveries answered, others in flight, more stored and leased to it. It is killed with SIGKILL;
its held requests are never handled. More messages are sent before the group notices. The survivor takes the
dead member's partitions (events it had read and not committed, if any, come again: their deliveries are found
stored, so the queue makes no second one) and, when their leases run out, sends the deliveries the dead worker
stored and did not record. Every acknowledged message's after_send reaches the receiver, with the message's own
data; none is dead; duplicates are allowed (at least once) and counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.server import FakeProvider, Request, Response, running

from flare_im.devcluster import Cluster, Proc
from flare_im.sdk.rest import RestClient

from .engines import ADMIN_KEY, engines, local_ports

SECRET = "cluster-webhook-secret-0123456789"
RECIPIENTS = 24  # one direct conversation each: keys spread over the topic's partitions
ROUNDS = 5  # messages to each recipient while the victim's requests are held
HOLD_AFTER = 10  # requests of the worker to be killed answered before the receiver holds the rest
LEASE_S = 8  # what the dead worker stored and did not record is sent again this long after it stored it


class Receiver(FakeProvider):
    """The business backend: checks ``Flare-Signature`` as docs/integration.md §2 says (not with Flare's helper)
    and counts the after_send events it accepted by id."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.data: dict[str, dict[str, Any]] = {}
        self.bad: list[str] = []  # what was wrong with a request refused

    def _signed(self, request: Request) -> bool:
        parts = dict(p.split("=", 1) for p in request.headers.get("flare-signature", "").split(",") if "=" in p)
        if not parts.get("t", "").isdigit() or abs(time.time() - int(parts["t"])) > 300:
            return False
        mac = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + request.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(mac, parts.get("v1", ""))

    async def handle(self, request: Request) -> Response:
        if not self._signed(request):
            self.bad.append(f"bad signature: {request.headers.get('flare-signature')!r}")
            return Response(401, b"bad signature")
        event = request.json()
        if (request.headers.get("flare-event"), request.headers.get("idempotency-key")) != (event["type"], event["id"]):
            self.bad.append(f"headers do not match the body: {request.headers} {event}")
            return Response(400)
        self.counts[event["id"]] += 1
        self.data[event["id"]] = event["data"]
        return Response(200)


@dataclass
class WebhookCluster:
    cluster: Cluster
    receiver: Receiver
    url: str
    workers: list[Proc]


@pytest.fixture
async def webhook_cluster(tmp_path: Path) -> AsyncIterator[WebhookCluster]:
    settings = {
        "FLARE_MESSAGES_PARTITIONS": "2",
        "FLARE_WEBHOOK_PARTITIONS": "6",
        "FLARE_WEBHOOK_LEASE_S": str(LEASE_S),
        "FLARE_WEBHOOK_BACKOFF_S": "0.5",
        "FLARE_WEBHOOK_REFRESH_S": "0.5",  # the node that did not create the endpoint sees it soon
    }
    receiver = Receiver()
    async with running(receiver) as url, engines("webhook", settings) as e:
        c = Cluster(tmp_path, e.env)
        # The webhook workers leave a dead member's partitions to the others after 4 s (nodes keep the default).
        worker_env = {**e.env, "FLARE_QUEUE_URL": f"{e.kafka_url}?session_timeout_ms=4000&heartbeat_interval_ms=500"}
        workers = [
            Proc(f"webhooks{i}", c.flare("worker", "webhooks"), worker_env, tmp_path / f"webhooks{i}.log")
            for i in (0, 1)
        ]
        try:
            await asyncio.to_thread(c.start, 2, e.haproxy)
            for w in workers:
                await asyncio.to_thread(w.start, "flare worker ready")
            yield WebhookCluster(c, receiver, url, workers)
        finally:
            for w in workers:
                w.stop()
            c.stop()


async def _until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(150)
async def test_after_send_reaches_the_receiver_at_least_once_across_a_killed_worker(
    webhook_cluster: WebhookCluster,
) -> None:
    c, receiver = webhook_cluster.cluster, webhook_cluster.receiver
    node_urls = [f"http://127.0.0.1:{api}" for api, _ in c.node_ports]
    recipients = [f"r{i:02d}" for i in range(RECIPIENTS)]
    async with contextlib.AsyncExitStack() as stack:
        admin = await stack.enter_async_context(RestClient(c.api_url, admin_key=ADMIN_KEY))
        for uid in ("ann", *recipients):
            await admin.admin_create_user(uid)
        token = await admin.admin_issue_token("ann")
        senders = [await stack.enter_async_context(RestClient(url, token=token)) for url in node_urls]
        body = {"url": f"{webhook_cluster.url}/hooks", "secret": SECRET, "events": ["after_send"], "timeout_ms": 30000}
        endpoint = await admin.request("POST", "/v1/admin/webhooks", json=body, admin=True)
        await asyncio.sleep(2.0)  # every node and worker has reloaded the endpoints (webhook_refresh_s 0.5)

        expected: dict[str, dict[str, Any]] = {}  # event id -> what the acknowledged message was
        sent = 0

        async def send(uid: str, text: str) -> None:
            nonlocal sent
            conv = f"d:ann:{uid}"
            sender = senders[sent % len(senders)]  # both nodes publish
            sent += 1
            ack = await sender.send(conv, uuid.uuid4().hex, {"text": text})
            expected[f"m_{ack['msg_id']}"] = {"conv": conv, "seq": ack["seq"], "msg_id": ack["msg_id"], "text": text}

        async def send_round(text: str) -> None:
            await asyncio.gather(*(send(uid, text) for uid in recipients))

        # Warm-up: both workers deliver (each holds some of the topic's partitions).
        victim, survivor = webhook_cluster.workers
        assert victim.proc is not None
        assert survivor.proc is not None
        victim_pid, survivor_pid = victim.proc.pid, survivor.proc.pid
        ports: dict[int, str] = {}

        def worker_of(request: Request) -> str:
            port = request.client[1]
            if port not in ports:
                ports[port] = (
                    "victim" if port in local_ports(victim_pid)
                    else "survivor" if port in local_ports(survivor_pid)
                    else "?"
                )  # fmt: skip
            return ports[port]

        for warm in range(10):
            await send_round(f"warm-up {warm}")
            await _until("the warm-up delivered", lambda: set(receiver.counts) >= set(expected), 30)
            if {worker_of(r) for r in receiver.accepted} >= {"victim", "survivor"}:
                break
        assert {worker_of(r) for r in receiver.accepted} >= {"victim", "survivor"}, "a worker got no partition"
        victims_convs = {r.json()["data"]["conv"] for r in receiver.accepted if worker_of(r) == "victim"}

        # The receiver answers HOLD_AFTER more requests of the victim, then holds its requests: it is mid-batch.
        receiver.hold_after(HOLD_AFTER, only=lambda r: worker_of(r) == "victim")
        answered_before = sum(1 for r in receiver.accepted if worker_of(r) == "victim")
        for round_ in range(ROUNDS):
            await send_round(f"round {round_}")
        await _until("the victim's requests held", lambda: len(receiver.held) >= 5, 30)
        answered_by_victim = sum(1 for r in receiver.accepted if worker_of(r) == "victim") - answered_before
        victim.kill()  # SIGKILL: its connections drop, what it had in flight is not delivered
        killed_at = time.monotonic()
        # Read after the kill: a request of the victim's may have been held between a count and the signal.
        await _until("the dead worker's requests abandoned", lambda: len(receiver.abandoned) == len(receiver.held), 10)
        held = len(receiver.held)
        receiver.release()
        # Sent before the group notices the death: the dead member's partitions hold them until the survivor has.
        await send_round("after the kill")
        taken_over = {e for e, m in expected.items() if m["text"] == "after the kill" and m["conv"] in victims_convs}

        await _until("every after_send delivered", lambda: set(receiver.counts) >= set(expected), 60)
        recovered_s = time.monotonic() - killed_at
        await asyncio.sleep(1.0)  # nothing else arrives
        assert not receiver.bad
        assert set(receiver.counts) == set(expected), set(receiver.counts) - set(expected)
        for event_id, message in expected.items():
            data = receiver.data[event_id]
            assert (data["conv"], data["seq"], data["msg_id"]) == (message["conv"], message["seq"], message["msg_id"])
            assert (data["sender"], data["kind"], data["body"]) == ("ann", "text", {"text": message["text"]})
        assert answered_by_victim >= HOLD_AFTER  # mid-batch: deliveries answered, others held
        assert held >= 5
        assert taken_over  # the survivor delivered events of partitions the dead member had held
        duplicates = {event_id: n for event_id, n in receiver.counts.items() if n > 1}
        print(
            f"webhook cluster: {len(expected)} events, {sum(receiver.counts.values())} deliveries accepted, "
            f"{len(duplicates)} delivered more than once, {held} held by the killed worker, "
            f"{len(taken_over)} sent after the kill on its partitions; all delivered {recovered_s:.1f} s after the kill"
        )

        # Every delivery recorded as delivered: none dead, none left pending.
        path = f"/v1/admin/webhooks/{endpoint['endpoint_id']}/deliveries"
        dead = await admin.request("GET", path, params={"state": "dead", "limit": 1000}, admin=True)
        assert dead["items"] == []
        deadline = time.monotonic() + 15
        while (pending := await admin.request("GET", path, params={"state": "pending"}, admin=True))["items"]:
            assert time.monotonic() < deadline, pending["items"][:3]
            await asyncio.sleep(0.2)
        delivered = await admin.request("GET", path, params={"state": "delivered", "limit": 1000}, admin=True)
        assert {d["event_id"] for d in delivered["items"]} == set(expected)

    for proc in (survivor, *c.nodes, c.worker):
        assert proc is not None
        assert "Traceback" not in proc.log_path.read_text(), proc.name
