"""A local push service (RFC 8030) that plays the browser too: it holds each subscription's private key and
auth secret and **decrypts** every message (RFC 8291/8188, written here independently of the adapter), so a
test sees the plaintext the service worker would.

``subscribe(base_url)`` makes a subscription (endpoint ``<base>/push/<id>``, ``p256dh``, ``auth``) bound to the
application server key ``vapid_public_key``, as ``pushManager.subscribe({applicationServerKey})`` does.
``POST /push/<id>`` checks: ``Authorization: vapid t=<JWT>, k=<key>`` with ``k`` the subscription's server key
(else 403) and the JWT valid ES256 under it, ``aud`` the origin, ``exp`` in the future and at most 24 h away,
``sub`` a mailto:/https: URL (else 401); ``Content-Encoding: aes128gcm``, a ``TTL``, ``Urgency`` and ``Topic``
well formed (else 400); a body of at most 4096 bytes (else 413); a subscription that exists (else 404) and is not
``gone`` (else 410). Accepted: 201 with a ``Location``; ``received`` has the decrypted JSON.
"""

from __future__ import annotations

import base64
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from tests.fakes.server import FakeProvider, Request, Response


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Subscription:
    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    server_key: str  # the applicationServerKey it was made with

    @property
    def keys(self) -> dict[str, str]:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"p256dh": _b64(point), "auth": _b64(self.auth_secret)}


@dataclass
class Delivery:
    subscription: str
    headers: dict[str, str]
    message: Any  # the decrypted payload, parsed as JSON
    vapid_claims: dict[str, Any] = field(default_factory=dict)


def decrypt(body: bytes, private_key: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """The user agent's side of RFC 8291: the aes128gcm body back to the plaintext."""
    salt, record_size, id_len = body[:16], *struct.unpack("!IB", body[16:21])
    sender_public = body[21 : 21 + id_len]
    ciphertext = body[21 + id_len :]
    if id_len != 65 or record_size < 18 or len(ciphertext) > record_size:
        raise ValueError("not a single aes128gcm record from a P-256 key")
    receiver_public = private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = private_key.exchange(
        ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_public)
    )
    info = b"WebPush: info\x00" + receiver_public + sender_public
    ikm = HKDF(hashes.SHA256(), 32, auth_secret, info).derive(shared)
    cek = HKDF(hashes.SHA256(), 16, salt, b"Content-Encoding: aes128gcm\x00").derive(ikm)
    nonce = HKDF(hashes.SHA256(), 12, salt, b"Content-Encoding: nonce\x00").derive(ikm)
    padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    content = padded.rstrip(b"\x00")
    if not content.endswith(b"\x02"):
        raise ValueError("the last record lacks its \\x02 delimiter")
    return content[:-1]


class FakePushService(FakeProvider):
    def __init__(self, vapid_public_key: str, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.vapid_public_key = vapid_public_key
        self.clock = clock
        self.subscriptions: dict[str, Subscription] = {}
        self.gone: set[str] = set()
        self.received: list[Delivery] = []

    def subscribe(self, base_url: str, server_key: str | None = None) -> Subscription:
        sid = secrets.token_urlsafe(12)
        sub = Subscription(
            sid,
            f"{base_url}/push/{sid}",
            ec.generate_private_key(ec.SECP256R1()),
            secrets.token_bytes(16),
            server_key or self.vapid_public_key,
        )
        self.subscriptions[sid] = sub
        return sub

    async def handle(self, request: Request) -> Response:
        match = re.fullmatch(r"/push/([A-Za-z0-9_\-]+)", request.path)
        if request.method != "POST" or match is None:
            return Response(404, b"Not Found")
        sub = self.subscriptions.get(match.group(1))
        if sub is None:
            return Response(404, b"No such subscription")
        auth = re.fullmatch(r"vapid t=([^,\s]+),\s*k=([A-Za-z0-9_\-]+)", request.headers.get("authorization", ""))
        if auth is None:
            return Response(401, b"Missing or malformed VAPID authorization")
        token, key = auth.groups()
        if key != sub.server_key:
            return Response(403, b"VAPID key does not match the subscription's applicationServerKey")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unb64(key))
        url = urlsplit(sub.endpoint)
        try:
            claims = jwt.decode(
                token,
                public,
                algorithms=["ES256"],
                audience=f"{url.scheme}://{url.netloc}",
                options={"verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            return Response(401, f"Invalid VAPID JWT: {exc}".encode())
        now = self.clock()
        if not now < claims.get("exp", 0) <= now + 86400:
            return Response(401, b"VAPID JWT expired or more than 24 hours ahead")
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return Response(401, b"VAPID sub must be a mailto: or https: URL")
        if failure := self.take_failure():
            headers = {"retry-after": failure.retry_after} if failure.retry_after else {}
            return Response(failure.status, failure.reason.encode(), headers)
        headers = request.headers
        if headers.get("content-encoding") != "aes128gcm":
            return Response(400, b"Content-Encoding must be aes128gcm")
        if not headers.get("ttl", "").isdigit():
            return Response(400, b"Missing or invalid TTL header")
        if headers.get("urgency", "normal") not in ("very-low", "low", "normal", "high"):
            return Response(400, b"Invalid Urgency header")
        if "topic" in headers and not re.fullmatch(r"[A-Za-z0-9_\-]{1,32}", headers["topic"]):
            return Response(400, b"Invalid Topic header")
        if len(request.body) > 4096:
            return Response(413, b"Payload Too Large")
        if sub.id in self.gone:
            return Response(410, b"push subscription has unsubscribed or expired.")
        try:
            import json

            message = json.loads(decrypt(request.body, sub.private_key, sub.auth_secret))
        except Exception as exc:
            return Response(400, f"the stand-in could not decrypt the payload: {exc!r}".encode())
        self.received.append(Delivery(sub.id, dict(headers), message, claims))
        return Response(201, b"", {"location": f"{url.scheme}://{url.netloc}/message/{len(self.received)}"})
