"""The push provider port's contract (backends/push/base.py), run on every adapter against its stand-in: a send
is ``sent``; a dead registration is ``invalid_token``; throttling is ``retry`` carrying ``Retry-After``; a
provider that is down is ``retry`` with status 0; ``send`` never raises, also when called concurrently."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from msgspec import structs
from tests.fakes.apns import FakeApns
from tests.fakes.fcm import FakeFcm
from tests.fakes.server import FakeProvider, running, self_signed_certificate
from tests.fakes.webhook import FakeWebhookReceiver
from tests.fakes.webpush import FakePushService

from flare_im.backends.push.apns import ApnsConfig, ApnsProvider
from flare_im.backends.push.base import OUTCOMES, Notification, PushProvider
from flare_im.backends.push.fcm import FcmConfig, FcmProvider, ServiceAccount
from flare_im.backends.push.webhook import WebhookConfig, WebhookProvider
from flare_im.backends.push.webpush import VapidKey, WebPushConfig, WebPushProvider


@dataclass
class Harness:
    provider: PushProvider
    fake: FakeProvider
    note: Notification  # a notification the stand-in accepts
    kill: Callable[[Notification], None]  # make its registration dead
    down: Callable[[int], PushProvider]  # the same adapter pointed at a closed port


def _pems(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


DATA = {"conv": "c1", "seq": "7"}


@pytest.fixture(params=["apns", "fcm", "webpush", "webhook"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    cert = self_signed_certificate(tmp_path)
    kind = request.param
    async with AsyncExitStack() as stack:
        if kind == "apns":
            private, public = _pems(ec.generate_private_key(ec.SECP256R1()))
            apns = FakeApns(public, "K", "T", "im.flare.app")
            url = await stack.enter_async_context(running(apns, cert))
            config = ApnsConfig(private, "K", "T", topic="im.flare.app", url=url, ca_file=cert.cert_file)
            note = Notification("j1", "apns", "ab" * 32, title="t", body="b", data=DATA)
            h = Harness(
                ApnsProvider(config),
                apns,
                note,
                lambda n: apns.unregistered.add(n.token),
                lambda port: ApnsProvider(dataclasses.replace(config, url=f"https://127.0.0.1:{port}")),
            )
        elif kind == "fcm":
            private, public = _pems(rsa.generate_private_key(public_exponent=65537, key_size=2048))
            fcm = FakeFcm(public, "a@p.iam.gserviceaccount.com", "p")
            url = await stack.enter_async_context(running(fcm, cert))
            fcm.token_uri = f"{url}/token"
            account = ServiceAccount("a@p.iam.gserviceaccount.com", private.decode(), fcm.token_uri, "p")
            fcm_config = FcmConfig(account, url=url, ca_file=cert.cert_file)
            note = Notification("j1", "fcm", "t" * 40, title="t", body="b", data=DATA)
            h = Harness(
                FcmProvider(fcm_config),
                fcm,
                note,
                lambda n: fcm.unregistered.add(n.token),
                lambda port: FcmProvider(dataclasses.replace(fcm_config, url=f"https://127.0.0.1:{port}")),
            )
        elif kind == "webpush":
            vapid = VapidKey.generate()
            service = FakePushService(vapid.public_key)
            url = await stack.enter_async_context(running(service, cert))
            sub = service.subscribe(url)
            wp_config = WebPushConfig(vapid, "mailto:ops@flare.example", ca_file=cert.cert_file)
            provider = WebPushProvider(wp_config)
            note = Notification("j1", "webpush", sub.endpoint, keys=sub.keys, title="t", body="b", data=DATA)
            h = Harness(
                provider,
                service,
                note,
                lambda n: service.gone.add(n.token.rsplit("/", 1)[1]),
                lambda port: _webpush_to(wp_config, port),
            )
        else:
            receiver = FakeWebhookReceiver("s")
            url = await stack.enter_async_context(running(receiver, cert))
            wh_config = WebhookConfig(f"{url}/push", "s", ca_file=cert.cert_file)
            note = Notification("j1", "webhook", "dev-token", title="t", body="b", data=DATA)
            h = Harness(
                WebhookProvider(wh_config),
                receiver,
                note,
                lambda n: receiver.dead.add(n.token),
                lambda port: WebhookProvider(dataclasses.replace(wh_config, url=f"https://127.0.0.1:{port}/push")),
            )
        stack.push_async_callback(h.provider.close)
        yield h


def _webpush_to(config: WebPushConfig, port: int) -> PushProvider:
    provider = WebPushProvider(config)

    class Redirected:
        name = "webpush"

        async def send(self, n: Notification) -> object:
            return await provider.send(structs.replace(n, token=f"https://127.0.0.1:{port}/push/x"))

        async def close(self) -> None:
            await provider.close()

    return Redirected()  # type: ignore[return-value]


async def test_an_accepted_send_is_sent(harness: Harness) -> None:
    result = await harness.provider.send(harness.note)
    assert (result.outcome, result.reason) == ("sent", "")
    assert 200 <= result.status < 300
    assert len(harness.fake.accepted) >= 1


async def test_a_dead_registration_is_an_invalid_token(harness: Harness) -> None:
    harness.kill(harness.note)
    result = await harness.provider.send(harness.note)
    assert result.outcome == "invalid_token"
    assert result.reason


async def test_throttling_is_a_retry_with_the_providers_delay(harness: Harness) -> None:
    harness.fake.fail_next(1, 429, "QUOTA_EXCEEDED" if harness.provider.name == "fcm" else "TooManyRequests", "9")
    result = await harness.provider.send(harness.note)
    assert (result.outcome, result.status, result.retry_after_s) == ("retry", 429, 9.0)
    assert (await harness.provider.send(harness.note)).outcome == "sent"  # the next one goes through


async def test_a_provider_that_is_down_is_a_retry_and_nothing_raises(harness: Harness) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    provider = harness.down(sock.getsockname()[1])
    try:
        results = await asyncio.gather(*(provider.send(harness.note) for _ in range(5)))
    finally:
        await provider.close()
        sock.close()
    assert {(r.outcome, r.status) for r in results} == {("retry", 0)}


async def test_outcomes_are_the_ports_vocabulary(harness: Harness) -> None:
    for status in (400, 500, 503):
        harness.fake.fail_next(1, status, "INTERNAL" if harness.provider.name == "fcm" else "x")
        result = await harness.provider.send(harness.note)
        assert result.outcome in OUTCOMES
        assert result.status == status
