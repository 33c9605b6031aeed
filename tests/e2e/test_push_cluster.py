"""Notifications in a cluster: `flare worker push` processes in one consumer group on the Kafka push topic, with
the engines of test_cluster.py (PostgreSQL, Redis, the tansu broker, ClickHouse, HAProxy), sending to the local
APNs stand-in (HTTP/2, TLS, ES256 tokens checked; tests/fakes/apns.py).

Users whose devices are offline get their pushes. Then a push worker is killed with SIGKILL mid-batch — some of
its sends answered and recorded, others held unanswered by the stand-in — and the other member of the group
takes its partitions over: every job reaches the stand-in once (counted by ``apns-id``, which is derived from the
job id), none twice. A request held when its worker died is not delivered (the stand-in never handles it): the
job's lease runs out and the surviving worker sends it.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.fakes.apns import FakeApns
from tests.fakes.server import Request, running, self_signed_certificate

from flare_im.backends.push.base import job_uuid
from flare_im.devcluster import Cluster, Proc
from flare_im.sdk.rest import RestClient

from .engines import ADMIN_KEY, engines, local_ports

TOPIC = "im.flare.cluster"
RECIPIENTS = 24
ROUNDS = 5  # messages to each recipient in the kill phase
HOLD_AFTER = 10  # sends of the worker to be killed answered before the stand-in holds its requests


@dataclass
class PushCluster:
    cluster: Cluster
    fake: FakeApns
    workers: list[Proc]


def _token(i: int) -> str:
    return f"{i:064x}"


@pytest.fixture
async def push_cluster(tmp_path: Path) -> AsyncIterator[PushCluster]:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "apns.p8").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    certificate = self_signed_certificate(tmp_path)
    fake = FakeApns(public, "KEY1234567", "TEAM123456", TOPIC)
    settings = {
        "FLARE_MESSAGES_PARTITIONS": "2",
        "FLARE_PUSH_PARTITIONS": "6",
        "FLARE_PUSH_COLLAPSE_WINDOW_S": "0",  # every message is its own notification: one job each
        "FLARE_PUSH_DEVICE_RATE_PER_MIN": "0",
        # A held request must not time out (the worker would retry a send the stand-in then answers), and a
        # lease must outlast a send: what the dead worker claimed is sent again 12 s after it claimed it.
        "FLARE_PUSH_TIMEOUT_S": "10",
        "FLARE_PUSH_LEASE_S": "12",
        "FLARE_APNS_KEY_FILE": str(tmp_path / "apns.p8"),
        "FLARE_APNS_KEY_ID": "KEY1234567",
        "FLARE_APNS_TEAM_ID": "TEAM123456",
        "FLARE_APNS_TOPIC": TOPIC,
        "FLARE_PUSH_CA_FILE": certificate.cert_file,
    }
    async with running(fake, certificate) as apns_url, engines("push", {**settings, "FLARE_APNS_URL": apns_url}) as e:
        c = Cluster(tmp_path, e.env)
        # The push workers leave a dead member's partitions to the others after 4 s (nodes keep the default).
        worker_env = {**e.env, "FLARE_QUEUE_URL": f"{e.kafka_url}?session_timeout_ms=4000&heartbeat_interval_ms=500"}
        workers = [Proc(f"push{i}", c.flare("worker", "push"), worker_env, tmp_path / f"push{i}.log") for i in (0, 1)]
        try:
            await asyncio.to_thread(c.start, 1, e.haproxy)
            for w in workers:
                await asyncio.to_thread(w.start, "flare worker ready")
            yield PushCluster(c, fake, workers)
        finally:
            for w in workers:
                w.stop()
            c.stop()


async def _until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _sent_jobs(admin: RestClient) -> int:
    stats = await admin.request("GET", "/v1/admin/push/stats", admin=True)
    return sum(int(row["sent"]) for row in stats["items"])


def _apns_ids(fake: FakeApns) -> collections.Counter[str]:
    return collections.Counter(r.headers["apns-id"] for r in fake.accepted)


@pytest.mark.timeout(180)
async def test_push_worker_killed_mid_batch_delivers_every_job_once(push_cluster: PushCluster) -> None:
    c = push_cluster.cluster
    async with RestClient(c.api_url, admin_key=ADMIN_KEY) as admin:
        await admin.admin_create_user("ann", display_name="Ann")
        async with RestClient(c.api_url, token=await admin.admin_issue_token("ann")) as ann:
            await _kill_a_worker_mid_batch(push_cluster, admin, ann)


async def _kill_a_worker_mid_batch(push_cluster: PushCluster, admin: RestClient, ann: RestClient) -> None:
    c, fake = push_cluster.cluster, push_cluster.fake
    recipients = [f"r{i:02d}" for i in range(RECIPIENTS)]
    for i, uid in enumerate(recipients):
        await admin.admin_create_user(uid)
        async with RestClient(c.api_url, token=await admin.admin_issue_token(uid)) as rest:
            await rest.register_push("phone", "apns", _token(i))
    expected: set[str] = set()

    async def send(uid: str, text: str) -> None:
        conv = f"d:ann:{uid}"
        sent = await ann.send(conv, uuid.uuid4().hex, {"text": text})
        expected.add(job_uuid(f"{uid}|phone|{conv}|{sent['seq']}"))

    # Offline devices get their pushes, through the Kafka push topic and a worker of the group.
    await send("r00", "hello from the cluster")
    await _until("the first push", lambda: _async(len(fake.accepted) == 1), 30)
    [first] = fake.accepted
    assert first.path == f"/3/device/{_token(0)}"
    assert first.json()["aps"]["alert"] == {"title": "Ann", "body": "hello from the cluster"}

    # The stand-in answers HOLD_AFTER more sends of one worker, then holds that worker's requests: it is
    # mid-batch, some of its jobs sent and recorded, others in flight; the other worker is answered as usual.
    victim, survivor = push_cluster.workers
    assert victim.proc is not None
    victim_pid = victim.proc.pid
    ports: dict[int, bool] = {}

    def of_victim(request: Request) -> bool:
        port = request.client[1]
        if port not in ports:
            ports[port] = port in local_ports(victim_pid)
        return ports[port]

    fake.hold_after(HOLD_AFTER, only=of_victim)
    for round_ in range(ROUNDS):
        await asyncio.gather(*(send(uid, f"round {round_}") for uid in recipients))
    await _until("requests held", lambda: _async(len(fake.held) >= 5), 30)
    await _until("the answered sends recorded", lambda: _equals(_sent_jobs(admin), len(fake.accepted)), 30)
    answered_by_victim = sum(1 for r in fake.accepted if ports.get(r.client[1]))
    held = list(fake.held)
    victim.kill()  # SIGKILL: its connections drop, and what it had in flight is not delivered
    await _until("the dead worker's held requests abandoned", lambda: _async(len(fake.abandoned) == len(held)), 10)
    fake.release()

    # The survivor takes the dead worker's partitions (redelivered events find their jobs claimed or done) and,
    # once their leases run out, sends the jobs the dead worker had claimed and not recorded.
    await _until("every job delivered", lambda: _async(set(_apns_ids(fake)) >= expected), 60)
    await asyncio.sleep(2.0)  # nothing more arrives
    ids = _apns_ids(fake)
    assert set(ids) == expected
    twice = {apns_id: n for apns_id, n in ids.items() if n > 1}
    assert not twice, f"delivered more than once: {twice}"
    assert len(expected) == 1 + RECIPIENTS * ROUNDS
    assert answered_by_victim >= HOLD_AFTER  # it was mid-batch: sends answered and recorded, others in flight
    await _until("every job recorded as sent", lambda: _equals(_sent_jobs(admin), len(expected)), 15)
    assert "Traceback" not in survivor.log_path.read_text()


async def _async(value: bool) -> bool:
    return value


async def _equals(pending: Any, value: int) -> bool:
    return bool(await pending == value)
