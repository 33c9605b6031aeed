"""FCM adapter: Firebase Cloud Messaging's HTTP v1 API, authenticated as a Google service account.

Credentials: the service account's JSON key (``client_email``, ``private_key``, ``private_key_id``,
``token_uri``, ``project_id``). An RS256-signed JWT assertion (scope ``firebase.messaging``, audience the token
URI, an hour long) is exchanged at ``token_uri`` (OAuth 2 ``urn:ietf:params:oauth:grant-type:jwt-bearer``) for
an access token, which is cached until ``refresh_margin_s`` before it expires and fetched by one caller at a
time; a 401 from ``messages:send`` drops it, fetches a new one and tries the send once more.

One request per notification, ``POST {url}/v1/projects/{project}/messages:send`` with ``message``: ``token``,
``notification`` (title, body; absent for silent pushes: data only), ``data`` (the app's key-values, all
strings), and the per-platform blocks: ``android`` (priority, ttl, collapse_key, notification tag and count),
``apns`` (headers apns-priority, apns-push-type, apns-collapse-id, apns-expiration; payload ``aps`` badge,
thread-id, content-available) and ``webpush`` (TTL, Urgency, Topic). FCM has no idempotency key: a retried
job may reach the device twice.

Answers (``error.details[].errorCode`` of type FcmError, else ``error.status``): ``UNREGISTERED`` and
``SENDER_ID_MISMATCH``, and ``INVALID_ARGUMENT`` about the registration token, are invalid_token; other
``INVALID_ARGUMENT`` failed; ``QUOTA_EXCEEDED`` (429), ``UNAVAILABLE`` (503) and ``INTERNAL`` (500) retry with
``Retry-After``; ``THIRD_PARTY_AUTH_ERROR`` failed (the APNs or Web Push credentials in the Firebase project).
``messages:send`` goes over h2client.H2Client (HTTP/2, multiplexed), the rare token requests over httpx. Tested
against a local stand-in of the token endpoint and ``messages:send`` (tests/fakes/fcm.py), not Google.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
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
    retry_after_seconds,
    transport_result,
)
from flare_im.backends.push.client import http_client
from flare_im.backends.push.h2client import H2Client, H2Error, H2Response, Header, literal_block
from flare_im.backends.push.webpush import topic_of

FCM_URL = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_INVALID_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_RETRY_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
# Data keys FCM reserves (INVALID_ARGUMENT if sent): left out of ``data``.
_RESERVED = ("from", "message_type", "collapse_key", "notification")
_RESERVED_PREFIXES = ("google.", "gcm.")


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    client_email: str
    private_key: str  # PEM (PKCS#8) RSA key
    token_uri: str
    project_id: str
    private_key_id: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServiceAccount:
        missing = [k for k in ("client_email", "private_key", "token_uri", "project_id") if not data.get(k)]
        if missing:
            raise ValueError(f"the service account JSON lacks {', '.join(missing)}")
        return cls(
            str(data["client_email"]),
            str(data["private_key"]),
            str(data["token_uri"]),
            str(data["project_id"]),
            str(data.get("private_key_id", "")),
        )


@dataclass(frozen=True, slots=True)
class FcmConfig:
    account: ServiceAccount
    url: str = FCM_URL  # a local stand-in in tests
    token_url: str = ""  # empty: the account's token_uri
    ca_file: str = ""  # extra CA bundle to trust (tests)
    timeout_s: float = 10.0
    refresh_margin_s: float = 300.0  # fetch a new access token this long before the cached one expires
    max_connections: int = 4  # HTTP/2 connections to FCM


class OAuthError(Exception):
    """The token endpoint refused or failed; ``retryable`` says whether trying later may help."""

    def __init__(self, reason: str, status: int, retryable: bool) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retryable = reason, status, retryable


class FcmProvider:
    """The FCM HTTP v1 adapter (see the module docstring). ``clock`` (epoch seconds) is for tests."""

    name = "fcm"

    def __init__(self, config: FcmConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        account = config.account
        self._send_path = f"{urlsplit(config.url).path.rstrip('/')}/v1/projects/{account.project_id}/messages:send"
        self._token_url = config.token_url or account.token_uri
        self._sender = H2Client(
            config.url, ca_file=config.ca_file, timeout_s=config.timeout_s, max_connections=config.max_connections
        )
        self._client = http_client(http2=False, ca_file=config.ca_file, timeout_s=config.timeout_s, max_connections=2)
        self._access_token = ""
        self._expires_at = 0.0
        self._headers: tuple[str, list[Header]] = ("", [])
        self._lock = asyncio.Lock()

    async def access_token(self) -> str:
        """The cached OAuth access token, fetched anew (by one caller at a time) when it is about to expire."""
        if self._access_token and self._clock() < self._expires_at - self._config.refresh_margin_s:
            return self._access_token
        async with self._lock:
            if self._access_token and self._clock() < self._expires_at - self._config.refresh_margin_s:
                return self._access_token
            token, lifetime = await self._fetch_token()
            self._access_token, self._expires_at = token, self._clock() + lifetime
            return token

    async def _fetch_token(self) -> tuple[str, float]:
        account = self._config.account
        now = int(self._clock())
        claims = {"iss": account.client_email, "scope": SCOPE, "aud": account.token_uri, "iat": now, "exp": now + 3600}
        headers = {"kid": account.private_key_id} if account.private_key_id else None
        assertion = jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)
        try:
            response = await self._client.post(self._token_url, data={"grant_type": GRANT_TYPE, "assertion": assertion})
        except httpx.HTTPError as exc:
            raise OAuthError(f"oauth: {type(exc).__name__}: {exc}"[:300], 0, True) from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            error = body.get("error", "") if isinstance(body, dict) else ""
            retryable = response.status_code >= 500 or response.status_code == 429
            raise OAuthError(f"oauth: {error or f'HTTP {response.status_code}'}", response.status_code, retryable)
        return str(body["access_token"]), float(body.get("expires_in", 3600))

    def _drop(self, token: str) -> None:
        if self._access_token == token:
            self._access_token = ""

    async def send(self, n: Notification) -> PushResult:
        body = msgspec.json.encode({"message": self.message(n)})  # compact UTF-8, as json.dumps(ensure_ascii=False)
        result = PushResult(FAILED)
        for _attempt in range(2):
            try:
                token = await self.access_token()
            except OAuthError as exc:
                return PushResult(RETRY if exc.retryable else FAILED, exc.reason, status=exc.status)
            if self._headers[0] != token:  # made once per access token
                self._headers = (
                    token,
                    [literal_block([("authorization", f"Bearer {token}"), ("content-type", "application/json")])],
                )
            headers = self._headers[1]
            try:
                response = await self._sender.request("POST", self._send_path, headers, body)
            except H2Error as exc:
                return transport_result(exc)
            result = _result(response)
            if not (response.status_code == 401 and result.reason in ("UNAUTHENTICATED", "HTTP 401")):
                return result
            self._drop(token)
        return PushResult(RETRY, result.reason, status=result.status)

    def message(self, n: Notification) -> dict[str, Any]:
        """The HTTP v1 ``message`` for ``n``."""
        high = n.priority == "high" and not n.silent
        data = {k: v for k, v in app_data(n).items() if k not in _RESERVED and not k.startswith(_RESERVED_PREFIXES)}
        android: dict[str, Any] = {"priority": "HIGH" if high else "NORMAL", "ttl": f"{max(n.ttl_s, 0)}s"}
        apns_headers = {
            "apns-priority": "10" if high else "5",
            "apns-push-type": "background" if n.silent else "alert",
            "apns-expiration": str(int(self._clock()) + n.ttl_s if n.ttl_s > 0 else 0),
        }
        aps: dict[str, Any] = {}
        webpush_headers = {"TTL": str(max(n.ttl_s, 0)), "Urgency": "high" if high else "normal"}
        if n.collapse_id:
            android["collapse_key"] = n.collapse_id
            apns_headers["apns-collapse-id"] = n.collapse_id.encode()[:64].decode(errors="ignore")
            webpush_headers["Topic"] = topic_of(n.collapse_id)
        message: dict[str, Any] = {"token": n.token, "data": data}
        if n.silent:
            aps["content-available"] = 1
        else:
            message["notification"] = {"title": n.title, "body": n.body}
            android_notification: dict[str, Any] = {}
            if n.collapse_id:
                android_notification["tag"] = n.collapse_id
            if n.badge is not None:
                android_notification["notification_count"] = n.badge
            if android_notification:
                android["notification"] = android_notification
            aps["category"] = n.category
        if n.badge is not None:
            aps["badge"] = n.badge
        if conv := n.data.get("conv"):
            aps["thread-id"] = conv
        message["android"] = android
        message["apns"] = {"headers": apns_headers, "payload": {"aps": aps}}
        message["webpush"] = {"headers": webpush_headers}
        return message

    async def close(self) -> None:
        await self._sender.aclose()
        await self._client.aclose()


def _error(response: H2Response) -> tuple[str, str]:
    """(the FCM error code or status, the message) of an error answer."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}", ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {response.status_code}", ""
    message = str(error.get("message", ""))
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        is_fcm_error = isinstance(detail, dict) and str(detail.get("@type", "")).endswith("fcm.v1.FcmError")
        if is_fcm_error and (code := detail.get("errorCode")):
            return str(code), message
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.BadRequest"):
            violations = detail.get("fieldViolations")
            for violation in violations if isinstance(violations, list) else []:
                if isinstance(violation, dict) and violation.get("field") == "message.token":
                    return "INVALID_ARGUMENT", "message.token: " + str(violation.get("description", message))
    return str(error.get("status") or f"HTTP {response.status_code}"), message


def _result(response: H2Response) -> PushResult:
    status = response.status_code
    if status == 200:
        try:
            name = response.json().get("name", "")
        except (ValueError, AttributeError):
            name = ""
        return PushResult(SENT, provider_id=str(name), status=status)
    code, message = _error(response)
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    if code in _INVALID_TOKEN_CODES:
        return PushResult(INVALID_TOKEN, code, status=status)
    if code == "INVALID_ARGUMENT" and ("message.token" in message or "registration token" in message.lower()):
        return PushResult(INVALID_TOKEN, code, status=status)
    if code in _RETRY_CODES or status == 429 or status >= 500:
        return PushResult(RETRY, code, retry_after, status=status)
    return PushResult(FAILED, f"{code}: {message}"[:300] if message and status != 401 else code, status=status)
