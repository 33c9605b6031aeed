"""APNs adapter: Apple's provider API over HTTP/2 with token-based authentication.

One request per notification, ``POST {url}/3/device/{token}``, authenticated by a provider token: an ES256 JWT
signed with the team's ``.p8`` key (header ``kid`` = key id; claims ``iss`` = team id, ``iat``). Apple rejects a
token older than an hour (403 ``ExpiredProviderToken``) and one refreshed more often than every 20 minutes
(429 ``TooManyProviderTokenUpdates``), so the token is cached and replaced every ``token_refresh_s`` (50 min),
and at once when Apple says it expired (then the send is tried once more with the new token).

Headers: ``apns-topic`` (the bundle id, ``.voip`` appended for VoIP pushes), ``apns-push-type`` (alert,
background for silent updates, voip), ``apns-priority`` (10, or 5 for normal priority and always for
background), ``apns-expiration`` (now + ttl), ``apns-collapse-id`` (a newer notification replaces the shown
one), ``apns-id`` (derived from the job id, so a retry is the same notification to Apple).

Answers: 200 sent; 410 ``Unregistered`` and 400 ``BadDeviceToken`` / ``DeviceTokenNotForTopic`` invalid_token;
429 and 5xx retry (with ``Retry-After`` when sent); 403 ``ExpiredProviderToken`` refresh and try once more; other
4xx failed (payload too large, bad topic, our key rejected). Requests go over h2client.H2Client (HTTP/2 only, as
Apple requires; up to ``max_connections``, each multiplexing as many as Apple allows). Tested against a local
stand-in speaking this API (tests/fakes/apns.py), not against Apple.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import msgspec

from flare_im.backends.push.base import (
    FAILED,
    INVALID_TOKEN,
    RETRY,
    SENT,
    Notification,
    PushResult,
    app_data,
    job_uuid,
    retry_after_seconds,
    transport_result,
)
from flare_im.backends.push.h2client import H2Client, H2Error, H2Response, Header, literal_block, never_indexed

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
_INVALID_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"})
_COLLAPSE_MAX = 64  # apns-collapse-id: at most 64 bytes


@dataclass(frozen=True, slots=True)
class ApnsConfig:
    key_pem: bytes  # the .p8 key (PKCS#8 PEM, P-256) from the Apple developer account
    key_id: str  # its 10-character key id: the JWT's kid
    team_id: str  # the developer team id: the JWT's iss
    topic: str = ""  # default bundle id when a registration carries none (app_id)
    url: str = PRODUCTION_URL  # SANDBOX_URL for development builds; a local stand-in in tests
    ca_file: str = ""  # extra CA bundle to trust (tests: the stand-in's self-signed certificate)
    timeout_s: float = 10.0
    token_refresh_s: float = 50 * 60  # Apple: older than 60 min is expired, newer than 20 min is too frequent
    max_connections: int = 4  # HTTP/2 connections; each multiplexes many concurrent requests


class ApnsProvider:
    """The APNs adapter (see the module docstring). ``clock`` (epoch seconds) is for tests of token refresh."""

    name = "apns"

    def __init__(self, config: ApnsConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self._client = H2Client(
            config.url, ca_file=config.ca_file, timeout_s=config.timeout_s, max_connections=config.max_connections
        )
        self._token = ""
        self._issued_at = 0.0
        self._authorization = ("", b"")  # (token, its header encoded), made once per token
        self._fixed: dict[tuple[str, str, str], bytes] = {}  # (topic, push type, priority) -> their headers

    def provider_token(self) -> str:
        """The cached provider token, signed anew when older than ``token_refresh_s``."""
        now = self._clock()
        if not self._token or now - self._issued_at >= self._config.token_refresh_s:
            self._issued_at = now
            self._token = jwt.encode(
                {"iss": self._config.team_id, "iat": int(now)},
                self._config.key_pem,
                algorithm="ES256",
                headers={"kid": self._config.key_id},
            )
        return self._token

    def _expire(self, token: str) -> None:
        """Apple said ``token`` expired: drop it unless a concurrent send replaced it already."""
        if self._token == token:
            self._token = ""

    async def send(self, n: Notification) -> PushResult:
        path = f"/3/device/{n.token}"
        headers = self.headers(n)
        body = msgspec.json.encode(self.payload(n))  # compact UTF-8 JSON, as json.dumps(ensure_ascii=False)
        result = PushResult(FAILED)
        for _attempt in range(2):
            token = self.provider_token()
            if self._authorization[0] != token:
                self._authorization = (token, literal_block([("authorization", f"bearer {token}")]))
            headers.append(self._authorization[1])
            try:
                response = await self._client.request("POST", path, headers, body)
            except H2Error as exc:
                return transport_result(exc)
            result = _result(response)
            if result.reason != "ExpiredProviderToken":
                return result
            self._expire(token)
            headers.pop()  # the authorization of the expired token
        return PushResult(RETRY, "ExpiredProviderToken", status=result.status)

    def headers(self, n: Notification) -> list[Header]:
        """The request's headers but authorization, encoded: those fixed per (topic, push type, priority) once,
        those that change per notification (expiration, apns-id, collapse id) each time."""
        topic = n.app_id or self._config.topic
        if n.voip:
            push_type, topic = "voip", f"{topic}.voip"
        else:
            push_type = "background" if n.silent else "alert"
        priority = "5" if push_type == "background" or n.priority != "high" else "10"
        key = (topic, push_type, priority)
        fixed = self._fixed.get(key)
        if fixed is None:
            if len(self._fixed) >= 256:  # topics come from registrations: bounded, but not by us
                self._fixed.clear()
            fixed = self._fixed[key] = literal_block(
                [
                    ("apns-topic", topic),
                    ("apns-push-type", push_type),
                    ("apns-priority", priority),
                    ("content-type", "application/json"),
                ]
            )
        headers: list[Header] = [
            fixed,
            never_indexed("apns-expiration", str(int(self._clock()) + n.ttl_s if n.ttl_s > 0 else 0)),
            never_indexed("apns-id", job_uuid(n.job_id)),
        ]
        if n.collapse_id:
            collapse = n.collapse_id.encode()[:_COLLAPSE_MAX].decode(errors="ignore")
            headers.append(never_indexed("apns-collapse-id", collapse))
        return headers

    @staticmethod
    def payload(n: Notification) -> dict[str, Any]:
        """``aps`` (alert, badge, sound, content-available, thread-id, category) and the app's data beside it."""
        aps: dict[str, Any] = {}
        if n.silent:
            aps["content-available"] = 1
        else:
            alert = {"title": n.title, "body": n.body} if n.title else {"body": n.body}
            aps["alert"] = alert
            aps["sound"] = "default"
            aps["category"] = n.category
        if n.badge is not None:
            aps["badge"] = n.badge
        if conv := n.data.get("conv"):
            aps["thread-id"] = conv
        payload: dict[str, Any] = {k: v for k, v in app_data(n).items() if k != "aps"}
        payload["aps"] = aps
        return payload

    async def close(self) -> None:
        await self._client.aclose()


def _reason(response: H2Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    return reason if isinstance(reason, str) else ""


def _result(response: H2Response) -> PushResult:
    status = response.status_code
    if status == 200:
        return PushResult(SENT, provider_id=response.headers.get("apns-id", ""), status=status)
    reason = _reason(response) or f"HTTP {status}"
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    if status == 410 or (status == 400 and reason in _INVALID_TOKEN_REASONS):
        return PushResult(INVALID_TOKEN, reason, status=status)
    if status == 429 or status >= 500:
        return PushResult(RETRY, reason, retry_after, status=status)
    return PushResult(FAILED, reason, status=status)
