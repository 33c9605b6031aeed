"""Notifications end to end: `flare serve` sending to the local APNs stand-in (HTTP/2, TLS, ES256 tokens,
tests/fakes/apns.py). An offline device gets exactly one push per message with the right payload, badge and
language; an online one gets none; a burst collapses; reading on another device sends the silent badge update;
a recall replaces; 410 removes the registration; a 429 with Retry-After is retried after the delay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.fakes.apns import FakeApns
from tests.fakes.server import Request, running, self_signed_certificate

from .conftest import Harness, ServerProcess

TOPIC = "im.flare.app"
DM = "d:alice:bob"
PHONE = "ab" * 32
TABLET = "cd" * 32


class Push:
    def __init__(self, fake: FakeApns, harness: Harness) -> None:
        self.fake, self.harness = fake, harness

    async def wait(self, count: int, timeout: float = 15.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while len(self.fake.accepted) < count and time.monotonic() < deadline:  # noqa: ASYNC110 - a fake's list
            await asyncio.sleep(0.05)
        assert len(self.fake.accepted) >= count, [r.json() for r in self.fake.accepted]
        return self.fake.accepted

    async def quiet(self, count: int, seconds: float = 1.5) -> None:
        """Nothing beyond ``count`` arrives for ``seconds``."""
        await asyncio.sleep(seconds)
        assert len(self.fake.accepted) == count, [r.json() for r in self.fake.accepted]


@pytest.fixture
async def push(tmp_path: Path) -> AsyncIterator[Push]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "apns.p8").write_bytes(private)
    certificate = self_signed_certificate(tmp_path)
    fake = FakeApns(public, "KEY1234567", "TEAM123456", TOPIC)
    async with running(fake, certificate) as url:
        env = {
            "FLARE_APNS_KEY_FILE": str(tmp_path / "apns.p8"),
            "FLARE_APNS_KEY_ID": "KEY1234567",
            "FLARE_APNS_TEAM_ID": "TEAM123456",
            "FLARE_APNS_TOPIC": TOPIC,
            "FLARE_APNS_URL": url,
            "FLARE_PUSH_CA_FILE": certificate.cert_file,
            "FLARE_PUSH_COLLAPSE_WINDOW_S": "1.0",
            "FLARE_PUSH_BACKOFF_S": "0.2",
        }
        srv = ServerProcess(tmp_path / "data", env_overrides=env)
        srv.start()
        harness = Harness(srv)
        await harness.user("alice")
        await harness.user("bob")
        try:
            yield Push(fake, harness)
        finally:
            await harness.close()
            srv.stop()


def aps(request: Request) -> dict[str, Any]:
    aps_: dict[str, Any] = request.json()["aps"]
    return aps_


async def test_offline_gets_one_push_online_none_and_a_burst_collapses(push: Push) -> None:
    h = push.harness
    await h.rest("bob").request(
        "PUT", "/v1/me/devices/phone/push", json={"provider": "apns", "token": PHONE, "locale": "zh-CN"}
    )
    await h.rest("alice").send(DM, "c1", {"text": "lunch?"})
    [first] = await push.wait(1)
    assert first.path == f"/3/device/{PHONE}"
    assert aps(first)["alert"] == {"title": "Alice", "body": "lunch?"}
    assert aps(first)["badge"] == 1
    collapse = first.headers["apns-collapse-id"]
    for i in range(3):  # within the 1 s window: one summary replaces the first
        await h.rest("alice").send(DM, f"b{i}", {"text": f"more {i}"})
    [_, summary] = await push.wait(2)
    assert aps(summary)["alert"]["body"] == "Alice 发来 4 条新消息"
    assert (summary.headers["apns-collapse-id"], aps(summary)["badge"]) == (collapse, 4)
    await push.quiet(2)
    await h.device("bob", "phone")  # online: nothing is pushed to it
    await h.rest("alice").send(DM, "c9", {"text": "are you there"})
    await push.quiet(2)


async def test_read_elsewhere_recall_invalid_token_and_retry_after(push: Push) -> None:
    h = push.harness
    await h.rest("bob").register_push("phone", "apns", PHONE)
    await h.rest("bob").register_push("tablet", "apns", TABLET)
    sent = await h.rest("alice").send(DM, "c1", {"text": "oops"})
    await push.wait(2)
    await h.rest("alice").request(
        "POST", f"/v1/conversations/{DM}/messages/{sent['seq']}/ops", json={"op": "recall", "opid": "r1"}
    )
    replaced = (await push.wait(4))[2:]
    assert {aps(r)["alert"]["body"] for r in replaced} == {"Alice recalled a message"}
    await asyncio.sleep(1.2)  # past the burst window
    phone = await h.device("bob", "phone")
    await phone.read(DM, sent["seq"] + 1)  # read on the phone: the tablet's badge goes to 0, silently
    [update] = (await push.wait(5))[4:]
    assert update.path == f"/3/device/{TABLET}"
    assert update.headers["apns-push-type"] == "background"
    assert aps(update)["badge"] == 0
    await phone.close()
    push.fake.unregistered.add(TABLET)
    await h.rest("alice").send(DM, "c2", {"text": "later"})
    assert (await push.wait(6))[5].path == f"/3/device/{PHONE}"
    for _ in range(100):
        if [d["device"] for d in await h.rest("bob").devices()] == ["phone"]:
            break
        await asyncio.sleep(0.1)
    assert [d["device"] for d in await h.rest("bob").devices()] == ["phone"]  # 410 removed the tablet
    await asyncio.sleep(1.2)  # past the burst window
    push.fake.fail_next(1, 429, "TooManyRequests", retry_after="1")
    began = time.monotonic()
    await h.rest("alice").send(DM, "c3", {"text": "much later"})
    retried = (await push.wait(7))[6]
    assert time.monotonic() - began >= 0.9  # not before the 429's Retry-After
    assert aps(retried)["alert"]["body"] == "much later"
    assert len(push.fake.requests) == len(push.fake.accepted) + 2  # the 429 and the 410
