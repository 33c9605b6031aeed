"""The APNs adapter against the local APNs stand-in (HTTP/2, TLS, ES256 provider tokens): what it sends, how it
reads every answer, provider-token refresh, one multiplexed connection, and an unreachable provider."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.clock import ManualClock
from tests.fakes.apns import FakeApns
from tests.fakes.server import Certificate, running, self_signed_certificate

from flare_im.backends.push.apns import ApnsConfig, ApnsProvider
from flare_im.backends.push.base import Notification, job_uuid

TOPIC = "im.flare.app"
DEVICE = "ab" * 32
NOW = 1_700_000_000.0


def _key() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


class World:
    def __init__(self, fake: FakeApns, provider: ApnsProvider, clock: ManualClock, config: ApnsConfig) -> None:
        self.fake, self.provider, self.clock, self.config = fake, provider, clock, config


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return self_signed_certificate(tmp_path)


@pytest.fixture
async def world(certificate: Certificate) -> AsyncIterator[World]:
    private, public = _key()
    clock = ManualClock(NOW)
    fake = FakeApns(public, "KEY1234567", "TEAM123456", TOPIC, clock=clock)
    async with running(fake, certificate) as url:
        config = ApnsConfig(private, "KEY1234567", "TEAM123456", topic=TOPIC, url=url, ca_file=certificate.cert_file)
        provider = ApnsProvider(config, clock=clock)
        try:
            yield World(fake, provider, clock, config)
        finally:
            await provider.close()


def _note(**changes: object) -> Notification:
    fields: dict[str, object] = {
        "job_id": "d1:c1:42:msg",
        "provider": "apns",
        "token": DEVICE,
        "title": "Ada",
        "body": "hello",
        "badge": 3,
        "collapse_id": "c1",
        "data": {"conv": "c1", "seq": "42", "msg_id": "m42", "kind": "text", "sender": "ada"},
    }
    fields.update(changes)
    return Notification(**fields)  # type: ignore[arg-type]


async def test_an_alert_carries_the_headers_and_payload_apns_wants(world: World) -> None:
    result = await world.provider.send(_note())
    assert result.outcome == "sent"
    assert result.status == 200
    assert result.provider_id == job_uuid("d1:c1:42:msg")
    [request] = world.fake.accepted
    assert request.http_version == "2"
    assert request.path == f"/3/device/{DEVICE}"
    headers = request.headers
    assert headers["apns-topic"] == TOPIC
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert headers["apns-collapse-id"] == "c1"
    assert headers["apns-id"] == job_uuid("d1:c1:42:msg")
    assert headers["apns-expiration"] == str(int(NOW) + 86400)
    assert request.json() == {
        "aps": {
            "alert": {"title": "Ada", "body": "hello"},
            "sound": "default",
            "category": "message",
            "badge": 3,
            "thread-id": "c1",
        },
        "conv": "c1",
        "seq": "42",
        "msg_id": "m42",
        "kind": "text",
        "sender": "ada",
        "category": "message",
    }


async def test_the_same_job_is_the_same_apns_id_and_another_job_is_not(world: World) -> None:
    await world.provider.send(_note())
    await world.provider.send(_note())
    await world.provider.send(_note(job_id="d1:c1:43:msg"))
    ids = [r.headers["apns-id"] for r in world.fake.accepted]
    assert ids[0] == ids[1] != ids[2]


async def test_a_silent_badge_update_is_a_background_push_at_priority_5(world: World) -> None:
    result = await world.provider.send(_note(category="badge", silent=True, title="", body="", badge=0))
    assert result.outcome == "sent"
    [request] = world.fake.accepted
    assert request.headers["apns-push-type"] == "background"
    assert request.headers["apns-priority"] == "5"
    assert request.json()["aps"] == {"content-available": 1, "badge": 0, "thread-id": "c1"}


async def test_normal_priority_is_5_and_a_call_is_a_voip_push(world: World) -> None:
    await world.provider.send(_note(priority="normal", badge=None))
    await world.provider.send(_note(category="call", voip=True, job_id="call"))
    normal, call = world.fake.accepted
    assert normal.headers["apns-priority"] == "5"
    assert "badge" not in normal.json()["aps"]
    assert call.headers["apns-topic"] == TOPIC + ".voip"
    assert call.headers["apns-push-type"] == "voip"
    assert call.headers["apns-priority"] == "10"


async def test_the_registration_topic_wins_over_the_default(world: World) -> None:
    result = await world.provider.send(_note(app_id="im.flare.other"))
    assert (result.outcome, result.reason, result.status) == ("invalid_token", "DeviceTokenNotForTopic", 400)


async def test_an_unregistered_device_is_an_invalid_token(world: World) -> None:
    world.fake.unregistered.add(DEVICE)
    result = await world.provider.send(_note())
    assert (result.outcome, result.reason, result.status) == ("invalid_token", "Unregistered", 410)


async def test_a_malformed_device_token_is_an_invalid_token(world: World) -> None:
    result = await world.provider.send(_note(token="not-hex"))
    assert (result.outcome, result.reason, result.status) == ("invalid_token", "BadDeviceToken", 400)


@pytest.mark.parametrize(
    ("status", "reason", "retry_after", "outcome", "after"),
    [
        (400, "BadDeviceToken", None, "invalid_token", None),
        (429, "TooManyRequests", "7", "retry", 7.0),
        (429, "TooManyRequests", None, "retry", None),
        (500, "InternalServerError", None, "retry", None),
        (503, "ServiceUnavailable", "2", "retry", 2.0),
        (400, "BadExpirationDate", None, "failed", None),
        (413, "PayloadTooLarge", None, "failed", None),
        (403, "InvalidProviderToken", None, "failed", None),
    ],
)
async def test_error_answers_map_to_outcomes(
    world: World, status: int, reason: str, retry_after: str | None, outcome: str, after: float | None
) -> None:
    world.fake.fail_next(1, status, reason, retry_after)
    result = await world.provider.send(_note())
    assert (result.outcome, result.reason, result.status, result.retry_after_s) == (outcome, reason, status, after)
    assert len(world.fake.requests) == 1  # no retry inside the adapter


async def test_a_payload_too_large_for_apns_fails_for_good(world: World) -> None:
    result = await world.provider.send(_note(body="x" * 5000))
    assert (result.outcome, result.reason, result.status) == ("failed", "PayloadTooLarge", 413)


async def test_a_wrong_key_is_refused_as_invalid_provider_token(world: World, certificate: Certificate) -> None:
    other, _ = _key()
    config = ApnsConfig(
        other, "KEY1234567", "TEAM123456", topic=TOPIC, url=world.config.url, ca_file=certificate.cert_file
    )
    provider = ApnsProvider(config, clock=world.clock)
    try:
        result = await provider.send(_note())
    finally:
        await provider.close()
    assert (result.outcome, result.reason, result.status) == ("failed", "InvalidProviderToken", 403)


async def test_the_provider_token_is_reused_then_refreshed_before_an_hour(world: World) -> None:
    await world.provider.send(_note())
    world.clock.advance(49 * 60)
    await world.provider.send(_note())
    assert len(world.fake.tokens_seen) == 1
    world.clock.advance(2 * 60)  # 51 minutes after it was signed
    result = await world.provider.send(_note())
    assert result.outcome == "sent"
    assert len(world.fake.tokens_seen) == 2
    first, second = (json.loads(_claims(t)) for t in world.fake.tokens_seen)
    assert second["iat"] - first["iat"] == 51 * 60


async def test_expired_provider_token_is_refreshed_and_the_send_tried_once_more(world: World) -> None:
    await world.provider.send(_note())
    world.fake.fail_next(1, 403, "ExpiredProviderToken")
    result = await world.provider.send(_note(job_id="again"))
    assert result.outcome == "sent"
    assert len(world.fake.tokens_seen) == 2
    expired, retried = world.fake.requests[1:]
    assert expired.headers["apns-id"] == retried.headers["apns-id"] == job_uuid("again")
    assert expired.headers["authorization"] != retried.headers["authorization"]


async def test_a_token_apns_calls_expired_twice_is_retried_later(world: World) -> None:
    world.fake.fail_next(2, 403, "ExpiredProviderToken")
    result = await world.provider.send(_note())
    assert (result.outcome, result.reason, result.status) == ("retry", "ExpiredProviderToken", 403)
    assert len(world.fake.requests) == 2


async def test_a_token_expired_by_apple_clock_is_refreshed(world: World) -> None:
    """The stand-in's own check: a token past an hour by the provider's clock is 403 ExpiredProviderToken."""
    provider_clock = ManualClock(NOW - 3700)  # our token looks fresh to us but is 61 minutes old to Apple
    provider = ApnsProvider(world.config, clock=provider_clock)
    try:
        stale = await provider.send(_note())
        provider_clock.advance(3700)  # the next send signs a token Apple accepts
        result = await provider.send(_note())
    finally:
        await provider.close()
    assert (stale.outcome, stale.reason) == ("retry", "ExpiredProviderToken")
    assert result.outcome == "sent"
    assert len(world.fake.tokens_seen) == 3  # stale, re-signed (still stale to Apple), then a fresh one


async def test_many_concurrent_sends_are_multiplexed(world: World) -> None:
    results = await asyncio.gather(*(world.provider.send(_note(job_id=f"j{i}")) for i in range(200)))
    assert {r.outcome for r in results} == {"sent"}
    assert len(world.fake.accepted) == 200
    assert {r.http_version for r in world.fake.accepted} == {"2"}
    # The stand-in (hypercorn) allows 100 concurrent streams per connection: a second one is opened for the rest.
    assert len({r.client for r in world.fake.accepted}) == 2
    more = await asyncio.gather(*(world.provider.send(_note(job_id=f"k{i}")) for i in range(50)))
    assert {r.outcome for r in more} == {"sent"}
    assert len({r.client for r in world.fake.accepted}) == 2  # reused, not opened again


async def test_a_connection_the_provider_ends_is_not_reused(certificate: Certificate) -> None:
    private, public = _key()
    fake = FakeApns(public, "KEY1234567", "TEAM123456", TOPIC)
    async with running(fake, certificate, max_requests=20) as url:  # then GOAWAY
        config = ApnsConfig(
            private, "KEY1234567", "TEAM123456", topic=TOPIC, url=url, ca_file=certificate.cert_file, timeout_s=1.0
        )
        provider = ApnsProvider(config)
        try:
            results = [await provider.send(_note(job_id=f"j{i}")) for i in range(70)]
        finally:
            await provider.close()
    # hypercorn announces GOAWAY on the request past its limit and never answers it: that one times out, a retry
    # (it may have been processed), and the next send goes over a new connection.
    outcomes = [r.outcome for r in results]
    assert set(outcomes) <= {"sent", "retry"}
    assert outcomes.count("retry") <= 3
    assert all(outcomes[i + 1] == "sent" for i, o in enumerate(outcomes[:-1]) if o == "retry")
    assert len({r.client for r in fake.accepted}) >= 3


async def test_a_send_without_an_answer_times_out_and_the_connection_serves_on(certificate: Certificate) -> None:
    private, public = _key()
    fake = FakeApns(public, "KEY1234567", "TEAM123456", TOPIC)
    async with running(fake, certificate) as url:
        config = ApnsConfig(
            private, "KEY1234567", "TEAM123456", topic=TOPIC, url=url, ca_file=certificate.cert_file, timeout_s=0.5
        )
        provider = ApnsProvider(config)
        try:
            assert (await provider.send(_note(job_id="first"))).outcome == "sent"
            fake.hold_after(0)
            late = await provider.send(_note(job_id="held"))
            fake.release()
            again = await provider.send(_note(job_id="after"))
        finally:
            await provider.close()
    assert (late.outcome, late.status) == ("retry", 0)
    assert "no answer within 0.5 s" in late.reason
    assert again.outcome == "sent"
    assert len({r.client for r in fake.accepted}) == 1  # the stream was reset, the connection kept


async def test_a_provider_that_is_down_is_a_retry() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    private, _ = _key()
    provider = ApnsProvider(ApnsConfig(private, "K", "T", topic=TOPIC, url=f"https://127.0.0.1:{port}"))
    try:
        result = await provider.send(_note())
    finally:
        await provider.close()
        sock.close()
    assert (result.outcome, result.status) == ("retry", 0)
    assert "ConnectionRefusedError" in result.reason


def _claims(token: str) -> str:
    import base64

    payload = token.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
