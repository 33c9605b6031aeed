"""Web Push adapter (RFC 8030 delivery, RFC 8291 message encryption, RFC 8292 VAPID).

A browser's subscription is an endpoint URL on its push service (the registration's token) and two keys
(``p256dh``, the browser's P-256 public key, and ``auth``, a 16-byte secret). One request per notification:
``POST <endpoint>`` with the JSON payload (``payload``) encrypted as one aes128gcm record (RFC 8188) under a
key agreed by ECDH between a fresh P-256 key and ``p256dh``, salted with ``auth`` (RFC 8291 §3), and headers
``TTL``, ``Urgency`` (high or normal), ``Topic`` (the collapse id: a newer message with the same topic replaces
an undelivered one), ``Authorization: vapid t=<ES256 JWT>, k=<our public key>``. The JWT's ``aud`` is the
endpoint's origin, ``sub`` the operator's contact (``mailto:`` or ``https:``), ``exp`` at most 24 h ahead; one is
signed per origin and reused until an hour before it expires.

Answers: 2xx sent (``Location`` is the message's URL); 404 and 410 invalid_token (the subscription expired or
was withdrawn); 429 and 5xx retry (with ``Retry-After``); 413 failed (payload too large: the encrypted body is
at most 4096 bytes, so the JSON at most ``MAX_PLAINTEXT``, refused before sending); other 4xx failed (a VAPID
key that does not match the subscription's, a malformed request). Web Push has no idempotency key: a retried job
may reach the browser twice. Tested against a local receiver that decrypts every payload (tests/fakes/webpush.py)
and with RFC 8291's Appendix A example, not against the browsers' push services.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flare_im.backends.push.base import (
    FAILED,
    INVALID_TOKEN,
    RETRY,
    SENT,
    Notification,
    PushResult,
    app_data,
    retry_after_seconds,
    transport_result,
)
from flare_im.backends.push.client import http_client

RECORD_SIZE = 4096
_HEADER_BYTES = 16 + 4 + 1 + 65  # salt, rs, idlen, keyid (the sender's public key)
MAX_PLAINTEXT = RECORD_SIZE - _HEADER_BYTES - 16 - 1  # one record: tag and padding delimiter; body ≤ 4096
_TOPIC = re.compile(r"[A-Za-z0-9_\-]{1,32}")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_key_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed point (65 bytes): the form of p256dh, VAPID's ``k`` and aes128gcm's keyid."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def encrypt(
    plaintext: bytes,
    p256dh: bytes,
    auth: bytes,
    *,
    sender: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> bytes:
    """RFC 8291 §3-4: ``plaintext`` as one aes128gcm record for the subscription's ``p256dh`` and ``auth``.
    ``sender`` (the ephemeral key) and ``salt`` are fresh random unless given (tests of the RFC's example)."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"a Web Push payload is at most {MAX_PLAINTEXT} bytes")
    sender = sender or ec.generate_private_key(ec.SECP256R1())
    salt = salt if salt is not None else os.urandom(16)
    receiver = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    shared = sender.exchange(ec.ECDH(), receiver)
    sender_public = public_key_bytes(sender)
    ikm = _hkdf(auth, shared, b"WebPush: info\x00" + p256dh + sender_public, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # \x02: the last record, no padding
    return salt + struct.pack("!IB", RECORD_SIZE, len(sender_public)) + sender_public + record


@functools.lru_cache(maxsize=4096)  # one collapse id per conversation: FCM asks for it on every send
@functools.lru_cache(maxsize=65536)  # a hash per notification otherwise; collapse ids repeat
def topic_of(collapse_id: str) -> str:
    """A Web Push ``Topic`` (≤ 32 characters of the base64url alphabet) for ``collapse_id``: itself when it
    already is one, else 32 characters of its SHA-256 (the same id always gives the same topic)."""
    if _TOPIC.fullmatch(collapse_id):
        return collapse_id
    return b64url_encode(hashlib.sha256(collapse_id.encode()).digest())[:32]


def payload(n: Notification) -> dict[str, Any]:
    """What the service worker's ``push`` event reads (``event.data.json()``): ``tag`` is the collapse id
    (``showNotification``'s tag replaces a shown notification with the same tag)."""
    body: dict[str, Any] = {"category": n.category, "data": app_data(n)}
    if not n.silent:
        body["title"], body["body"] = n.title, n.body
    if n.silent:
        body["silent"] = True
    if n.collapse_id:
        body["tag"] = n.collapse_id
    if n.badge is not None:
        body["badge"] = n.badge
    if n.locale:
        body["locale"] = n.locale
    return body


@dataclass(frozen=True, slots=True)
class VapidKey:
    """The application server's key pair: ``private_pem`` signs, ``public_key`` (base64url of the uncompressed
    point) is what browsers subscribe with (``applicationServerKey``)."""

    private_pem: bytes
    public_key: str

    @classmethod
    def from_private(cls, key: ec.EllipticCurvePrivateKey) -> VapidKey:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls(pem, b64url_encode(public_key_bytes(key)))

    @classmethod
    def generate(cls) -> VapidKey:
        return cls.from_private(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def parse(cls, text: bytes) -> VapidKey:
        """A PEM private key (PKCS#8 or SEC 1), or the raw 32-byte scalar in base64url (what web-push tools
        print as the "private key")."""
        if b"-----BEGIN" in text:
            key = serialization.load_pem_private_key(text, password=None)
        else:
            key = ec.derive_private_key(int.from_bytes(b64url_decode(text.strip().decode()), "big"), ec.SECP256R1())
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("a VAPID key is a P-256 (prime256v1) EC private key")
        return cls.from_private(key)


def load_or_create_vapid_key(path: Path, *, create: bool = True) -> VapidKey:
    """The VAPID key kept in ``path``; with ``create``, a new one is generated and written there (mode 0600) if
    the file does not exist, as the JWT secret is. Every node must sign with the same key: browsers subscribed
    with its public key, and a push service refuses a JWT signed by another."""
    if path.exists():
        return VapidKey.parse(path.read_bytes())
    if not create:
        raise FileNotFoundError(f"no VAPID key at {path}")
    key = VapidKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key.private_pem)
    return key


@dataclass(frozen=True, slots=True)
class WebPushConfig:
    vapid: VapidKey
    subject: str  # mailto:ops@example.com or an https: URL: how a push service reaches the operator
    ca_file: str = ""  # extra CA bundle to trust (tests)
    timeout_s: float = 10.0
    jwt_lifetime_s: int = 12 * 3600  # RFC 8292: at most 24 h
    max_connections: int = 100  # over all push services (one origin per browser vendor)


class WebPushProvider:
    """The Web Push adapter (see the module docstring). ``clock`` (epoch seconds) is for tests."""

    name = "webpush"

    def __init__(self, config: WebPushConfig, *, clock: Callable[[], float] = time.time) -> None:
        if not config.subject.startswith(("mailto:", "https:")):
            raise ValueError("the VAPID subject is a mailto: or https: URL")
        self._config = config
        self._clock = clock
        self._client = http_client(
            http2=True, ca_file=config.ca_file, timeout_s=config.timeout_s, max_connections=config.max_connections
        )
        self._jwts: dict[str, tuple[str, float]] = {}  # origin -> (JWT, exp)

    def authorization(self, endpoint: str) -> str:
        """``vapid t=<JWT>, k=<public key>`` for the endpoint's origin, re-signed an hour before ``exp``."""
        url = urlsplit(endpoint)
        origin = f"{url.scheme}://{url.netloc}"
        now = self._clock()
        cached = self._jwts.get(origin)
        if cached is None or now >= cached[1] - 3600:
            exp = int(now) + self._config.jwt_lifetime_s
            token = jwt.encode(
                {"aud": origin, "exp": exp, "sub": self._config.subject},
                self._config.vapid.private_pem,
                algorithm="ES256",
            )
            cached = self._jwts[origin] = (token, exp)
        return f"vapid t={cached[0]}, k={self._config.vapid.public_key}"

    async def send(self, n: Notification) -> PushResult:
        try:
            p256dh, auth = b64url_decode(n.keys["p256dh"]), b64url_decode(n.keys["auth"])
            plaintext = json.dumps(payload(n), separators=(",", ":"), ensure_ascii=False).encode()
            if len(plaintext) > MAX_PLAINTEXT:
                return PushResult(FAILED, f"PayloadTooLarge: {len(plaintext)} > {MAX_PLAINTEXT} bytes")
            body = encrypt(plaintext, p256dh, auth)
        except (KeyError, ValueError, TypeError) as exc:  # keys missing, not base64url, not a P-256 point
            return PushResult(INVALID_TOKEN, f"bad subscription keys: {type(exc).__name__}: {exc}"[:300])
        headers = {
            "authorization": self.authorization(n.token),
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "ttl": str(max(n.ttl_s, 0)),
            "urgency": "high" if n.priority == "high" and not n.silent else "normal",
        }
        if n.collapse_id:
            headers["topic"] = topic_of(n.collapse_id)
        try:
            response = await self._client.post(n.token, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return transport_result(exc)
        return _result(response)

    async def close(self) -> None:
        await self._client.aclose()


def _result(response: httpx.Response) -> PushResult:
    status = response.status_code
    if 200 <= status < 300:
        return PushResult(SENT, provider_id=response.headers.get("location", ""), status=status)
    reason = f"{status} {response.reason_phrase}".strip()
    text = response.text[:200].strip()
    if text:
        reason = f"{reason}: {text}"
    if status in (404, 410):
        return PushResult(INVALID_TOKEN, reason, status=status)
    if status == 429 or status >= 500:
        return PushResult(RETRY, reason, retry_after_seconds(response.headers.get("retry-after")), status=status)
    return PushResult(FAILED, reason, status=status)
