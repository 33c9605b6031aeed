"""Notifications end to end through `flare serve` to the local stand-ins of FCM (OAuth token endpoint and
messages:send, checking the service account's signature), a Web Push service (VAPID checked, every payload
decrypted with the subscription's private key) and a webhook receiver (Flare-Signature checked), all over TLS.

For each: an offline device gets exactly one push per message with the right payload and badge, and a token the
provider calls invalid removes the registration. The Web Push subscription is made with the key the server
publishes at ``GET /v1/push/vapid``. (APNs: test_push_apns_e2e.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sized
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.fakes.fcm import FakeFcm
from tests.fakes.server import running, self_signed_certificate
from tests.fakes.webhook import FakeWebhookReceiver
from tests.fakes.webpush import FakePushService

from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.sdk.rest import RestClient

from .conftest import Harness, ServerProcess

DM = "d:alice:bob"
PROJECT = "flare-e2e"
EMAIL = "push@flare-e2e.iam.gserviceaccount.com"
SECRET = "webhook-secret-0123456789"
COMMON = {"FLARE_PUSH_COLLAPSE_WINDOW_S": "0", "FLARE_PUSH_BACKOFF_S": "0.2"}  # one notification per message


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[Harness]:
    """`flare serve` with ``env`` and the users alice and bob (bob's devices stay offline)."""
    srv = ServerProcess(tmp_path / "data", env_overrides={**COMMON, **env})
    srv.start()
    harness = Harness(srv)
    try:
        await harness.user("alice")
        await harness.user("bob")
        yield harness
    finally:
        await harness.close()
        srv.stop()


async def _until(delivered: Sized, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while len(delivered) < count and time.monotonic() < deadline:  # noqa: ASYNC110 - a stand-in's list
        await asyncio.sleep(0.05)
    assert len(delivered) >= count, f"{len(delivered)} pushes, expected {count}"


async def _two_messages(h: Harness, delivered: Sized) -> list[int]:
    """alice sends bob two messages: bob's offline device gets exactly one push for each. Returns their seqs."""
    seqs = []
    for i, text in enumerate(("lunch?", "at noon")):
        seqs.append((await h.rest("alice").send(DM, f"m{i}", {"text": text}))["seq"])
        await _until(delivered, i + 1)
    await asyncio.sleep(1.0)
    assert len(delivered) == 2  # nothing more: one push per message
    return seqs


async def _invalid_token_removes_the_registration(h: Harness, delivered: Sized, kill: Callable[[], None]) -> None:
    """The provider says the token is dead: the next push removes the registration, and nothing is delivered."""
    kill()
    await h.rest("alice").send(DM, "m9", {"text": "still there?"})
    for _ in range(150):
        if not await h.rest("bob").devices():
            break
        await asyncio.sleep(0.1)
    assert await h.rest("bob").devices() == []
    assert len(delivered) == 2
    [latest, *_] = (await h.rest("bob").request("GET", "/v1/me/notifications/history"))["items"]
    assert (latest["state"], latest["reason"].split(":")[0]) == ("failed", "invalid_token")


async def test_fcm_offline_device_one_push_per_message_and_unregistered(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    certificate = self_signed_certificate(tmp_path)
    fake = FakeFcm(public, EMAIL, PROJECT)
    token = "fcm-registration-" + "x" * 40
    async with running(fake, certificate) as url:
        fake.token_uri = f"{url}/token"
        account = {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "k1",
            "private_key": private,
            "client_email": EMAIL,
            "token_uri": fake.token_uri,
        }
        (tmp_path / "service-account.json").write_text(json.dumps(account))
        env = {
            "FLARE_FCM_SERVICE_ACCOUNT_FILE": str(tmp_path / "service-account.json"),
            "FLARE_FCM_URL": url,
            "FLARE_PUSH_CA_FILE": certificate.cert_file,
        }
        async with serving(tmp_path, env) as h:
            with pytest.raises(FlareError) as refused:  # Web Push is not configured here
                await h.rest("bob").request("GET", "/v1/push/vapid")
            assert refused.value.code == ErrorCode.NOT_FOUND
            assert "FLARE_WEBPUSH_SUBJECT" in str(refused.value)
            await h.rest("bob").register_push("phone", "fcm", token)
            seqs = await _two_messages(h, fake.messages)
            for i, (message, text) in enumerate(zip(fake.messages, ("lunch?", "at noon"), strict=True)):
                assert message["token"] == token
                assert message["notification"] == {"title": "Alice", "body": text}
                data: Any = message["data"]
                assert (data["conv"], data["seq"], data["sender"], data["category"]) == (
                    DM,
                    str(seqs[i]),
                    "alice",
                    "message",
                )
                android: Any = message["android"]
                assert android["priority"] == "HIGH"
                assert android["notification"]["notification_count"] == i + 1  # the badge: total unread
            assert len(fake.assertions) == 1  # one OAuth token, reused
            await _invalid_token_removes_the_registration(h, fake.messages, lambda: fake.unregistered.add(token))


async def test_webpush_offline_browser_one_decrypted_push_per_message_and_gone(tmp_path: Path) -> None:
    certificate = self_signed_certificate(tmp_path)
    fake = FakePushService("")  # subscriptions are made with the key the server publishes
    async with running(fake, certificate) as url:
        env = {"FLARE_WEBPUSH_SUBJECT": "mailto:ops@flare.example", "FLARE_PUSH_CA_FILE": certificate.cert_file}
        async with serving(tmp_path, env) as h:
            async with RestClient(h.srv.api_url) as anonymous:  # a public key: no credentials needed
                vapid = await anonymous.request("GET", "/v1/push/vapid")
            assert vapid == await h.rest("bob").request("GET", "/v1/push/vapid")
            sub = fake.subscribe(url, server_key=vapid["public_key"])
            await h.rest("bob").register_push("browser", "webpush", sub.endpoint, keys=sub.keys)
            seqs = await _two_messages(h, fake.received)
            for i, (delivery, text) in enumerate(zip(fake.received, ("lunch?", "at noon"), strict=True)):
                message = delivery.message  # decrypted by the stand-in with the subscription's private key
                assert (message["title"], message["body"], message["badge"]) == ("Alice", text, i + 1)
                assert (message["data"]["conv"], message["data"]["seq"]) == (DM, str(seqs[i]))
                assert message["tag"].startswith("c")  # the collapse id
                assert delivery.headers["urgency"] == "high"
                assert delivery.vapid_claims["sub"] == "mailto:ops@flare.example"
            await _invalid_token_removes_the_registration(h, fake.received, lambda: fake.gone.add(sub.id))


async def test_webhook_offline_device_one_signed_post_per_message_and_410(tmp_path: Path) -> None:
    certificate = self_signed_certificate(tmp_path)
    fake = FakeWebhookReceiver(SECRET)  # refuses a request whose Flare-Signature does not verify
    token = "jpush:1a0018970a2b3c4d"
    async with running(fake, certificate) as url:
        env = {
            "FLARE_PUSH_WEBHOOK_URL": f"{url}/flare/push",
            "FLARE_PUSH_WEBHOOK_SECRET": SECRET,
            "FLARE_PUSH_CA_FILE": certificate.cert_file,
        }
        async with serving(tmp_path, env) as h:
            bob = h.rest("bob")
            for bad, keys in (
                ("has space", None),
                ("", None),
                ("x" * 4097, None),
                (token, {"p256dh": "a", "auth": "b"}),
            ):
                with pytest.raises(FlareError) as refused:
                    await bob.register_push("phone", "webhook", bad, keys=keys)
                assert refused.value.code == ErrorCode.INVALID
            target = await bob.register_push("phone", "webhook", token, app_id="cn.example.chat")
            assert (target["provider"], target["token"], target["app_id"]) == ("webhook", token, "cn.example.chat")
            seqs = await _two_messages(h, fake.received)
            for i, (message, text) in enumerate(zip(fake.received, ("lunch?", "at noon"), strict=True)):
                assert (message["provider"], message["token"], message["app_id"]) == (
                    "webhook",
                    token,
                    "cn.example.chat",
                )
                assert (message["title"], message["body"], message["badge"]) == ("Alice", text, i + 1)
                assert (message["category"], message["data"]["conv"], message["data"]["seq"]) == (
                    "message",
                    DM,
                    str(seqs[i]),
                )
                assert message["job_id"] == f"bob|phone|{DM}|{seqs[i]}"
            assert [r.headers["idempotency-key"] for r in fake.accepted] == [m["job_id"] for m in fake.received]
            await _invalid_token_removes_the_registration(h, fake.received, lambda: fake.dead.add(token))
