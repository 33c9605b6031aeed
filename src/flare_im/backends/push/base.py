"""The push provider port: send one notification to one device through its provider, and say what happened.

The notification service (services/notify*.py) owns everything before and after a send: templates, badges,
collapse and frequency control, retries with backoff, the dead-letter store, deleting registrations. An adapter
only turns a ``Notification`` into its provider's request and the provider's answer into a ``PushResult``:

- ``sent``: the provider accepted it (not: the device showed it; no provider tells that).
- ``invalid_token``: the provider says the registration is dead (uninstalled app, expired subscription, a token
  of another app): delete it and never send to it again.
- ``retry``: a transient failure (rate limited, provider unavailable, connection refused or reset, timeout).
  ``retry_after_s`` carries the provider's ``Retry-After`` when it sent one; otherwise the caller's backoff
  decides. A retried send may reach the device twice where the provider has no idempotency key (FCM, Web Push,
  webhook receivers that ignore ``Idempotency-Key``); APNs gets the same ``apns-id`` for the same ``job_id``.
- ``failed``: permanent for this notification but not the token's fault (payload too large, our credentials
  rejected, a malformed request): retrying the same request will not help.

``send`` never raises for provider or network errors; it maps them to a result. It may be called concurrently
from many tasks: every adapter keeps one HTTP client per process, its connections reused (HTTP/2 multiplexed
where the provider speaks it), and its credentials (provider tokens, OAuth access tokens) cached and refreshed
by one caller at a time.
"""

from __future__ import annotations

import email.utils
import hashlib
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

SENT = "sent"
INVALID_TOKEN = "invalid_token"
RETRY = "retry"
FAILED = "failed"
OUTCOMES = (SENT, INVALID_TOKEN, RETRY, FAILED)
CATEGORIES = ("message", "mention", "call", "system", "badge")


class Notification(msgspec.Struct, frozen=True):
    # A frozen Struct, not a frozen dataclass: one is made per notification, and a frozen dataclass's __init__
    # (object.__setattr__ per field) costs ~15x more. Copies with changes: msgspec.structs.replace.
    job_id: str  # stable per (device, conversation, seq, kind); idempotency key where the provider has one
    provider: str  # "apns" | "fcm" | "webpush" | "webhook"
    token: str  # APNs device token (hex) | FCM registration token | Web Push endpoint URL | webhook: device token
    app_id: str = ""  # APNs topic (bundle id); FCM/webhook: passed through
    keys: Mapping[str, str] = msgspec.field(default_factory=dict)  # Web Push: p256dh, auth (base64url)
    category: str = "message"  # message | mention | call | system | badge (a silent badge/withdraw update)
    title: str = ""
    body: str = ""
    badge: int | None = None  # the absolute unread total (iOS needs it absolute)
    collapse_id: str = ""  # per conversation: a newer notification replaces the shown one
    priority: str = "high"  # high | normal
    silent: bool = False  # background/data-only (badge sync, withdraw)
    voip: bool = False  # APNs VoIP push (category call)
    ttl_s: int = 86400
    data: Mapping[str, str] = msgspec.field(default_factory=dict)  # conv, seq, msg_id, kind, sender … for the app
    locale: str = ""


class PushResult(msgspec.Struct, frozen=True):
    outcome: str  # "sent" | "invalid_token" (drop the registration) | "retry" | "failed" (permanent, not the token)
    reason: str = ""  # the provider's reason (Unregistered, BadDeviceToken, UNREGISTERED, QUOTA_EXCEEDED, 410 Gone…)
    retry_after_s: float | None = None  # from Retry-After when the provider sent one
    provider_id: str = ""  # apns-id / FCM message name / Web Push message URL / …
    status: int = 0  # the HTTP status seen (0: none, e.g. connection refused → retry)


class PushProvider(Protocol):
    name: str  # "apns" | "fcm" | "webpush" | "webhook"

    async def send(self, n: Notification) -> PushResult:
        """Send ``n`` once (an adapter retries by itself only after refreshing an expired credential, once) and
        map the provider's answer, or the network error, to a result. Never raises for provider or network
        errors. Safe to call concurrently."""
        ...

    async def close(self) -> None:
        """Close the adapter's connections. Sends after ``close`` are not supported."""
        ...


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent or
    unreadable. A date in the past is 0."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_JOB_NAMESPACE = uuid.UUID("5b0e7a52-52c4-4bd5-9c43-6a3f1a7f2f0e")


def job_uuid(job_id: str) -> str:
    """A UUID derived from ``job_id`` (the same for every retry of a job), in the form APNs wants for apns-id:
    ``str(uuid.uuid5(_JOB_NAMESPACE, job_id))``, computed without the UUID objects (once per notification)."""
    digest = bytearray(hashlib.sha1(_JOB_NAMESPACE.bytes + job_id.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def transport_result(exc: Exception) -> PushResult:
    """A network error (refused, reset, timeout, TLS, protocol): no answer from the provider, so try again."""
    return PushResult(RETRY, reason=f"{type(exc).__name__}: {exc}"[:300])


def content(n: Notification) -> dict[str, Any]:
    """What a notification says, without where it goes: the job's stored payload, and part of a webhook's body."""
    return {
        "category": n.category,
        "title": n.title,
        "body": n.body,
        "badge": n.badge,
        "collapse_id": n.collapse_id,
        "priority": n.priority,
        "silent": n.silent,
        "voip": n.voip,
        "ttl_s": n.ttl_s,
        "data": dict(n.data),
        "locale": n.locale,
    }


def app_data(n: Notification) -> dict[str, str]:
    """The key-value data an app receives beside the visible alert: ``n.data`` plus the category."""
    data = {str(k): str(v) for k, v in n.data.items()}
    data.setdefault("category", n.category)
    return data
