"""The webhook adapter against a local receiver that checks the signature: the body and headers, every
answer's outcome, a wrong secret, an unreachable receiver; over plain HTTP and over TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.clock import ManualClock
from tests.fakes.server import running, self_signed_certificate
from tests.fakes.webhook import FakeWebhookReceiver

from flare_im.backends.push.base import Notification
from flare_im.backends.push.webhook import WebhookConfig, WebhookProvider, signature, verify_signature

SECRET = "whsec-test"
NOW = 1_700_000_000.0


class World:
    def __init__(self, fake: FakeWebhookReceiver, provider: WebhookProvider, config: WebhookConfig) -> None:
        self.fake, self.provider, self.config = fake, provider, config


@pytest.fixture(params=["http", "https"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    clock = ManualClock(NOW)
    fake = FakeWebhookReceiver(SECRET, clock=clock)
    certificate = self_signed_certificate(tmp_path) if request.param == "https" else None
    async with running(fake, certificate) as url:
        config = WebhookConfig(f"{url}/flare/push", SECRET, ca_file=certificate.cert_file if certificate else "")
        provider = WebhookProvider(config, clock=clock)
        try:
            yield World(fake, provider, config)
        finally:
            await provider.close()


def _note(**changes: object) -> Notification:
    fields: dict[str, object] = {
        "job_id": "d1:c1:42:msg",
        "provider": "webhook",
        "token": "jpush-reg-1",
        "app_id": "im.flare.app",
        "title": "Ada",
        "body": "你好",
        "badge": 3,
        "collapse_id": "c1",
        "data": {"conv": "c1", "seq": "42"},
        "locale": "zh",
    }
    fields.update(changes)
    return Notification(**fields)  # type: ignore[arg-type]


async def test_a_signed_post_carries_every_field(world: World) -> None:
    result = await world.provider.send(_note())
    assert (result.outcome, result.status, result.provider_id) == ("sent", 202, "r1")
    [message] = world.fake.received
    assert message == {
        "job_id": "d1:c1:42:msg",
        "provider": "webhook",
        "token": "jpush-reg-1",
        "app_id": "im.flare.app",
        "keys": {},
        "category": "message",
        "title": "Ada",
        "body": "你好",
        "badge": 3,
        "collapse_id": "c1",
        "priority": "high",
        "silent": False,
        "voip": False,
        "ttl_s": 86400,
        "data": {"conv": "c1", "seq": "42"},
        "locale": "zh",
    }
    [request] = world.fake.requests
    assert request.path == "/flare/push"
    assert request.headers["idempotency-key"] == "d1:c1:42:msg"
    assert request.headers["content-type"] == "application/json"
    t, v1 = request.headers["flare-signature"].split(",")
    assert t == f"t={int(NOW)}"
    assert v1 == "v1=" + hmac.new(SECRET.encode(), f"{int(NOW)}.".encode() + request.body, hashlib.sha256).hexdigest()


async def test_a_wrong_secret_is_refused_and_fails(world: World) -> None:
    provider = WebhookProvider(dataclasses.replace(world.config, secret="other"), clock=lambda: NOW)
    try:
        result = await provider.send(_note())
    finally:
        await provider.close()
    assert (result.outcome, result.status) == ("failed", 401)
    assert world.fake.received == []


@pytest.mark.parametrize(
    ("status", "retry_after", "outcome", "after"),
    [
        (410, None, "invalid_token", None),
        (429, "4", "retry", 4.0),
        (408, None, "retry", None),
        (500, None, "retry", None),
        (502, "1", "retry", 1.0),
        (400, None, "failed", None),
        (404, None, "failed", None),
    ],
)
async def test_error_answers_map_to_outcomes(
    world: World, status: int, retry_after: str | None, outcome: str, after: float | None
) -> None:
    world.fake.fail_next(1, status, "nope", retry_after)
    result = await world.provider.send(_note())
    assert (result.outcome, result.status, result.retry_after_s) == (outcome, status, after)


async def test_a_dead_device_is_an_invalid_token(world: World) -> None:
    world.fake.dead.add("jpush-reg-1")
    result = await world.provider.send(_note())
    assert (result.outcome, result.status) == ("invalid_token", 410)


async def test_concurrent_sends_are_all_delivered(world: World) -> None:
    results = await asyncio.gather(*(world.provider.send(_note(job_id=f"j{i}")) for i in range(40)))
    assert {r.outcome for r in results} == {"sent"}
    assert sorted(m["job_id"] for m in world.fake.received) == sorted(f"j{i}" for i in range(40))


async def test_a_receiver_that_is_down_is_a_retry() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    provider = WebhookProvider(WebhookConfig(f"http://127.0.0.1:{sock.getsockname()[1]}/", SECRET))
    try:
        result = await provider.send(_note())
    finally:
        await provider.close()
        sock.close()
    assert (result.outcome, result.status) == ("retry", 0)


def test_the_signature_helpers_agree_and_refuse_stale_or_altered_bodies() -> None:
    header = signature(SECRET, int(NOW), b'{"a":1}')
    assert verify_signature(SECRET, header, b'{"a":1}', now=NOW + 10)
    assert not verify_signature(SECRET, header, b'{"a":2}', now=NOW)
    assert not verify_signature(SECRET, header, b'{"a":1}', now=NOW + 301)
    assert not verify_signature("other", header, b'{"a":1}', now=NOW)
    assert not verify_signature(SECRET, "garbage", b"", now=NOW)


def test_a_webhook_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        WebhookProvider(WebhookConfig("https://example.net/push", ""))
