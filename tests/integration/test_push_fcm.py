"""The FCM HTTP v1 adapter against the local stand-in of FCM and Google's token endpoint: the OAuth flow with a
service account, the message it sends, how it reads every answer, access-token reuse and refresh, and an
unreachable provider."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.clock import ManualClock
from tests.fakes.fcm import FakeFcm
from tests.fakes.server import Certificate, running, self_signed_certificate

from flare_im.backends.push.base import Notification
from flare_im.backends.push.fcm import FcmConfig, FcmProvider, ServiceAccount

PROJECT = "flare-test"
EMAIL = "push@flare-test.iam.gserviceaccount.com"
DEVICE = "fcm-token-" + "x" * 40
NOW = 1_700_000_000.0


def _rsa() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


KEY, PUBLIC = _rsa()


class World:
    def __init__(self, fake: FakeFcm, provider: FcmProvider, clock: ManualClock, config: FcmConfig) -> None:
        self.fake, self.provider, self.clock, self.config = fake, provider, clock, config


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return self_signed_certificate(tmp_path)


@pytest.fixture
async def world(certificate: Certificate) -> AsyncIterator[World]:
    clock = ManualClock(NOW)
    fake = FakeFcm(PUBLIC, EMAIL, PROJECT, clock=clock)
    async with running(fake, certificate) as url:
        fake.token_uri = f"{url}/token"
        account = ServiceAccount.from_json(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "k1",
                "private_key": KEY,
                "client_email": EMAIL,
                "token_uri": fake.token_uri,
            }
        )
        config = FcmConfig(account, url=url, ca_file=certificate.cert_file)
        provider = FcmProvider(config, clock=clock)
        try:
            yield World(fake, provider, clock, config)
        finally:
            await provider.close()


def _note(**changes: object) -> Notification:
    fields: dict[str, object] = {
        "job_id": "d1:c1:42:msg",
        "provider": "fcm",
        "token": DEVICE,
        "title": "Ada",
        "body": "hello",
        "badge": 3,
        "collapse_id": "c1",
        "data": {"conv": "c1", "seq": "42", "msg_id": "m42", "kind": "text", "sender": "ada"},
    }
    fields.update(changes)
    return Notification(**fields)  # type: ignore[arg-type]


async def test_a_notification_carries_every_platform_block(world: World) -> None:
    result = await world.provider.send(_note())
    assert result.outcome == "sent"
    assert result.provider_id == f"projects/{PROJECT}/messages/0:1"
    token_request, request = world.fake.accepted
    assert token_request.path == "/token"
    assert request.http_version == "2"
    assert request.headers["authorization"].startswith("Bearer ya29.")
    [message] = world.fake.messages
    assert message == {
        "token": DEVICE,
        "data": {"conv": "c1", "seq": "42", "msg_id": "m42", "kind": "text", "sender": "ada", "category": "message"},
        "notification": {"title": "Ada", "body": "hello"},
        "android": {
            "priority": "HIGH",
            "ttl": "86400s",
            "collapse_key": "c1",
            "notification": {"tag": "c1", "notification_count": 3},
        },
        "apns": {
            "headers": {
                "apns-priority": "10",
                "apns-push-type": "alert",
                "apns-expiration": str(int(NOW) + 86400),
                "apns-collapse-id": "c1",
            },
            "payload": {"aps": {"category": "message", "badge": 3, "thread-id": "c1"}},
        },
        "webpush": {"headers": {"TTL": "86400", "Urgency": "high", "Topic": "c1"}},
    }
    [claims] = world.fake.assertions
    assert claims["iss"] == EMAIL
    assert claims["aud"] == world.fake.token_uri


async def test_a_silent_update_is_data_only_at_normal_priority(world: World) -> None:
    await world.provider.send(_note(category="badge", silent=True, title="", body="", badge=0, collapse_id=""))
    [message] = world.fake.messages
    assert "notification" not in message
    assert message["android"] == {"priority": "NORMAL", "ttl": "86400s"}
    assert message["apns"] == {
        "headers": {"apns-priority": "5", "apns-push-type": "background", "apns-expiration": str(int(NOW) + 86400)},
        "payload": {"aps": {"content-available": 1, "badge": 0, "thread-id": "c1"}},
    }
    assert message["data"]["category"] == "badge"


async def test_reserved_data_keys_are_left_out(world: World) -> None:
    result = await world.provider.send(_note(data={"conv": "c1", "from": "x", "google.x": "y", "gcm.n": "z"}))
    assert result.outcome == "sent"
    assert world.fake.messages[0]["data"] == {"conv": "c1", "category": "message"}


async def test_the_access_token_is_reused_until_shortly_before_it_expires(world: World) -> None:
    for _ in range(3):
        assert (await world.provider.send(_note())).outcome == "sent"
    assert len(world.fake.assertions) == 1
    world.clock.advance(3599 - 301)  # still more than the 300 s margin left
    await world.provider.send(_note())
    assert len(world.fake.assertions) == 1
    world.clock.advance(2)  # now inside the margin: a new token before the old one expires
    await world.provider.send(_note())
    assert len(world.fake.assertions) == 2


async def test_concurrent_sends_fetch_one_access_token_and_share_one_connection(world: World) -> None:
    results = await asyncio.gather(*(world.provider.send(_note(job_id=f"j{i}")) for i in range(100)))
    assert {r.outcome for r in results} == {"sent"}
    assert len(world.fake.assertions) == 1
    sends = [r for r in world.fake.accepted if r.path.endswith("messages:send")]
    assert len({r.client for r in sends}) == 1  # multiplexed over one HTTP/2 connection


async def test_a_401_refreshes_the_access_token_and_sends_once_more(world: World) -> None:
    await world.provider.send(_note())
    world.fake.revoke_all()
    result = await world.provider.send(_note())
    assert result.outcome == "sent"
    assert len(world.fake.assertions) == 2
    assert len(world.fake.messages) == 2
    rejected, _token_request, retried = world.fake.requests[-3:]
    assert rejected.headers["authorization"] != retried.headers["authorization"]


async def test_an_unregistered_token_is_invalid(world: World) -> None:
    world.fake.unregistered.add(DEVICE)
    result = await world.provider.send(_note())
    assert (result.outcome, result.reason, result.status) == ("invalid_token", "UNREGISTERED", 404)


async def test_a_malformed_token_is_invalid(world: World) -> None:
    result = await world.provider.send(_note(token="short"))
    assert (result.outcome, result.reason, result.status) == ("invalid_token", "INVALID_ARGUMENT", 400)


@pytest.mark.parametrize(
    ("status", "code", "retry_after", "outcome", "after"),
    [
        (404, "UNREGISTERED", None, "invalid_token", None),
        (403, "SENDER_ID_MISMATCH", None, "invalid_token", None),
        (429, "QUOTA_EXCEEDED", "30", "retry", 30.0),
        (503, "UNAVAILABLE", "5", "retry", 5.0),
        (503, "UNAVAILABLE", None, "retry", None),
        (500, "INTERNAL", None, "retry", None),
        (401, "THIRD_PARTY_AUTH_ERROR", None, "failed", None),
    ],
)
async def test_error_answers_map_to_outcomes(
    world: World, status: int, code: str, retry_after: str | None, outcome: str, after: float | None
) -> None:
    world.fake.fail_next(1, status, code, retry_after)
    result = await world.provider.send(_note())
    assert (result.outcome, result.reason, result.status, result.retry_after_s) == (outcome, code, status, after)
    assert len(world.fake.requests) == 2  # the token request and one send: no retry inside the adapter


async def test_an_invalid_argument_not_about_the_token_fails_without_dropping_it(world: World) -> None:
    world.fake.fail_next(1, 400, "INVALID_ARGUMENT")
    result = await world.provider.send(_note())
    assert (result.outcome, result.status) == ("failed", 400)
    assert result.reason.startswith("INVALID_ARGUMENT")


async def test_a_service_account_the_token_endpoint_refuses_fails(world: World) -> None:
    other, _ = _rsa()
    account = ServiceAccount(EMAIL, other, world.fake.token_uri, PROJECT)
    config = FcmConfig(account, url=world.config.url, ca_file=world.config.ca_file)
    provider = FcmProvider(config, clock=world.clock)
    try:
        result = await provider.send(_note())
    finally:
        await provider.close()
    assert (result.outcome, result.reason, result.status) == ("failed", "oauth: invalid_grant", 400)
    assert world.fake.messages == []


def _closed_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    return sock, sock.getsockname()[1]


async def test_fcm_down_is_a_retry(world: World) -> None:
    sock, port = _closed_port()
    config = FcmConfig(world.config.account, url=f"https://127.0.0.1:{port}", ca_file=world.config.ca_file)
    provider = FcmProvider(config, clock=world.clock)
    try:
        result = await provider.send(_note())
    finally:
        await provider.close()
        sock.close()
    assert (result.outcome, result.status) == ("retry", 0)
    assert "ConnectionRefusedError" in result.reason


async def test_the_token_endpoint_down_is_a_retry(world: World) -> None:
    sock, port = _closed_port()
    config = FcmConfig(
        world.config.account,
        url=world.config.url,
        token_url=f"https://127.0.0.1:{port}/token",
        ca_file=world.config.ca_file,
    )
    provider = FcmProvider(config, clock=world.clock)
    try:
        result = await provider.send(_note())
    finally:
        await provider.close()
        sock.close()
    assert (result.outcome, result.status) == ("retry", 0)
    assert result.reason.startswith("oauth: ConnectError")


def test_a_service_account_without_its_key_is_refused() -> None:
    with pytest.raises(ValueError, match="private_key"):
        ServiceAccount.from_json({"client_email": EMAIL, "token_uri": "https://x/token", "project_id": PROJECT})
