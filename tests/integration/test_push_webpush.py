"""The Web Push adapter: RFC 8291's own example, then against a local push service that verifies VAPID and
decrypts every payload with the subscription's private key; every answer's outcome; an unreachable service."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.clock import ManualClock
from tests.fakes.server import Certificate, running, self_signed_certificate
from tests.fakes.webpush import FakePushService, Subscription, decrypt

from flare_im.backends.push.base import Notification
from flare_im.backends.push.webpush import (
    MAX_PLAINTEXT,
    VapidKey,
    WebPushConfig,
    WebPushProvider,
    encrypt,
    load_or_create_vapid_key,
    topic_of,
)

NOW = 1_700_000_000.0


def _b(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_encryption_reproduces_rfc_8291_appendix_a() -> None:
    sender = ec.derive_private_key(
        int.from_bytes(_b("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"), "big"), ec.SECP256R1()
    )
    body = encrypt(
        b"When I grow up, I want to be a watermelon",
        _b("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"),
        _b("BTBZMqHH6r4Tts7J_aSIgg"),
        sender=sender,
        salt=_b("DGv6ra1nlYgDCS1FRnbzlw"),
    )
    assert body == _b(
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_"
        "yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
    )
    receiver = ec.derive_private_key(
        int.from_bytes(_b("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"), "big"), ec.SECP256R1()
    )
    assert decrypt(body, receiver, _b("BTBZMqHH6r4Tts7J_aSIgg")) == b"When I grow up, I want to be a watermelon"


def test_topics_are_short_url_safe_and_stable() -> None:
    assert topic_of("c1") == "c1"
    long = topic_of("g:" + "x" * 60)
    assert len(long) == 32
    assert long == topic_of("g:" + "x" * 60) != topic_of("g:" + "y" * 60)
    assert "=" not in long


def test_the_vapid_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "vapid.pem"
    first = load_or_create_vapid_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_vapid_key(path) == first
    assert len(_b(first.public_key)) == 65
    with pytest.raises(FileNotFoundError):
        load_or_create_vapid_key(tmp_path / "missing.pem", create=False)


def test_a_raw_base64url_vapid_key_is_read_like_its_pem() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = base64.urlsafe_b64encode(key.private_numbers().private_value.to_bytes(32, "big")).rstrip(b"=")
    assert VapidKey.parse(raw) == VapidKey.from_private(key)


class World:
    def __init__(self, fake: FakePushService, provider: WebPushProvider, url: str, clock: ManualClock) -> None:
        self.fake, self.provider, self.url, self.clock = fake, provider, url, clock

    def subscribe(self) -> Subscription:
        return self.fake.subscribe(self.url)


VAPID = VapidKey.generate()


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return self_signed_certificate(tmp_path)


@pytest.fixture
async def world(certificate: Certificate) -> AsyncIterator[World]:
    clock = ManualClock(NOW)
    fake = FakePushService(VAPID.public_key, clock=clock)
    async with running(fake, certificate) as url:
        config = WebPushConfig(VAPID, "mailto:ops@flare.example", ca_file=certificate.cert_file)
        provider = WebPushProvider(config, clock=clock)
        try:
            yield World(fake, provider, url, clock)
        finally:
            await provider.close()


def _note(sub: Subscription, **changes: object) -> Notification:
    fields: dict[str, object] = {
        "job_id": "d1:c1:42:msg",
        "provider": "webpush",
        "token": sub.endpoint,
        "keys": sub.keys,
        "title": "Ada",
        "body": "hello",
        "badge": 3,
        "collapse_id": "c1",
        "data": {"conv": "c1", "seq": "42", "msg_id": "m42", "kind": "text", "sender": "ada"},
        "locale": "en",
    }
    fields.update(changes)
    return Notification(**fields)  # type: ignore[arg-type]


async def test_the_payload_is_encrypted_for_the_subscription_and_decrypts(world: World) -> None:
    sub = world.subscribe()
    result = await world.provider.send(_note(sub))
    assert result.outcome == "sent"
    assert result.status == 201
    assert result.provider_id == f"{world.url}/message/1"
    [delivery] = world.fake.received
    assert delivery.subscription == sub.id
    assert delivery.message == {
        "category": "message",
        "data": {"conv": "c1", "seq": "42", "msg_id": "m42", "kind": "text", "sender": "ada", "category": "message"},
        "title": "Ada",
        "body": "hello",
        "tag": "c1",
        "badge": 3,
        "locale": "en",
    }
    assert delivery.headers["ttl"] == "86400"
    assert delivery.headers["urgency"] == "high"
    assert delivery.headers["topic"] == "c1"
    assert delivery.vapid_claims["aud"] == world.url
    assert delivery.vapid_claims["sub"] == "mailto:ops@flare.example"
    assert delivery.vapid_claims["exp"] == int(NOW) + 12 * 3600
    # Nothing of the plaintext is on the wire.
    assert b"hello" not in world.fake.requests[0].body


async def test_every_message_is_encrypted_afresh(world: World) -> None:
    sub = world.subscribe()
    await world.provider.send(_note(sub))
    await world.provider.send(_note(sub))
    first, second = (r.body for r in world.fake.requests)
    assert first[:16] != second[:16]  # a new salt
    assert first[21:86] != second[21:86]  # and a new sender key
    assert world.fake.received[0].message == world.fake.received[1].message


async def test_a_silent_update_is_normal_urgency_without_title(world: World) -> None:
    sub = world.subscribe()
    await world.provider.send(_note(sub, category="badge", silent=True, title="", body="", badge=0, collapse_id=""))
    [delivery] = world.fake.received
    assert delivery.headers["urgency"] == "normal"
    assert "topic" not in delivery.headers
    assert delivery.message["silent"] is True
    assert delivery.message["badge"] == 0
    assert "title" not in delivery.message


async def test_the_vapid_jwt_is_reused_per_origin_and_renewed_before_it_expires(world: World) -> None:
    sub = world.subscribe()
    await world.provider.send(_note(sub))
    world.clock.advance(10 * 3600)
    await world.provider.send(_note(sub))
    world.clock.advance(1.5 * 3600)  # within an hour of exp: a new JWT
    result = await world.provider.send(_note(sub))
    assert result.outcome == "sent"
    tokens = [r.headers["authorization"] for r in world.fake.requests]
    assert tokens[0] == tokens[1] != tokens[2]
    assert world.fake.received[2].vapid_claims["exp"] == int(NOW + 11.5 * 3600) + 12 * 3600


async def test_gone_and_unknown_subscriptions_are_invalid_tokens(world: World) -> None:
    sub = world.subscribe()
    world.fake.gone.add(sub.id)
    gone = await world.provider.send(_note(sub))
    assert (gone.outcome, gone.status) == ("invalid_token", 410)
    unknown = await world.provider.send(_note(sub, token=f"{world.url}/push/nobody"))
    assert (unknown.outcome, unknown.status) == ("invalid_token", 404)


async def test_a_subscription_made_with_another_server_key_fails(world: World) -> None:
    sub = world.fake.subscribe(world.url, server_key=VapidKey.generate().public_key)
    result = await world.provider.send(_note(sub))
    assert (result.outcome, result.status) == ("failed", 403)


@pytest.mark.parametrize(
    ("status", "retry_after", "outcome", "after"),
    [
        (429, "10", "retry", 10.0),
        (500, None, "retry", None),
        (503, "3", "retry", 3.0),
        (413, None, "failed", None),
        (400, None, "failed", None),
        (404, None, "invalid_token", None),
        (410, None, "invalid_token", None),
    ],
)
async def test_error_answers_map_to_outcomes(
    world: World, status: int, retry_after: str | None, outcome: str, after: float | None
) -> None:
    sub = world.subscribe()
    world.fake.fail_next(1, status, "nope", retry_after)
    result = await world.provider.send(_note(sub))
    assert (result.outcome, result.status, result.retry_after_s) == (outcome, status, after)
    assert result.reason.startswith(str(status))


async def test_a_payload_over_the_limit_fails_before_sending(world: World) -> None:
    sub = world.subscribe()
    result = await world.provider.send(_note(sub, body="x" * MAX_PLAINTEXT))
    assert result.outcome == "failed"
    assert result.reason.startswith("PayloadTooLarge")
    assert world.fake.requests == []


async def test_a_payload_at_the_limit_is_delivered(world: World) -> None:
    sub = world.subscribe()
    base = len(_plaintext_of(world, sub))
    result = await world.provider.send(_note(sub, body="x" * (MAX_PLAINTEXT - base)))
    assert result.outcome == "sent"
    assert len(world.fake.requests[-1].body) == 4096


def _plaintext_of(world: World, sub: Subscription) -> bytes:
    import json

    from flare_im.backends.push.webpush import payload

    return json.dumps(payload(_note(sub, body="")), separators=(",", ":")).encode()


async def test_broken_subscription_keys_are_an_invalid_token(world: World) -> None:
    sub = world.subscribe()
    result = await world.provider.send(_note(sub, keys={"p256dh": "AAAA", "auth": sub.keys["auth"]}))
    assert result.outcome == "invalid_token"
    assert result.reason.startswith("bad subscription keys")
    assert world.fake.requests == []


async def test_concurrent_sends_share_one_connection(world: World) -> None:
    sub = world.subscribe()
    results = await asyncio.gather(*(world.provider.send(_note(sub, job_id=f"j{i}")) for i in range(50)))
    assert {r.outcome for r in results} == {"sent"}
    assert len(world.fake.received) == 50
    assert len({r.client for r in world.fake.requests}) == 1


async def test_a_push_service_that_is_down_is_a_retry(world: World) -> None:
    sub = world.subscribe()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        result = await world.provider.send(_note(sub, token=f"https://127.0.0.1:{sock.getsockname()[1]}/push/x"))
    finally:
        sock.close()
    assert (result.outcome, result.status) == ("retry", 0)


def test_the_vapid_subject_must_be_a_contact_url() -> None:
    with pytest.raises(ValueError, match="mailto"):
        WebPushProvider(WebPushConfig(VAPID, "ops@flare.example"))


def test_vapid_claims_verify_under_the_public_key() -> None:
    provider = WebPushProvider(WebPushConfig(VAPID, "https://flare.example/contact"), clock=lambda: NOW)
    header = provider.authorization("https://push.example.net/send/abc?x=1")
    token, key = header.removeprefix("vapid t=").split(", k=")
    assert key == VAPID.public_key
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b(key))
    claims = jwt.decode(
        token, public, algorithms=["ES256"], audience="https://push.example.net", options={"verify_exp": False}
    )
    assert claims == {
        "aud": "https://push.example.net",
        "exp": int(NOW) + 12 * 3600,
        "sub": "https://flare.example/contact",
    }
    asyncio.run(provider.close())
