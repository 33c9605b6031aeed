"""Webhook adapter: a signed POST of each notification to the operator's own push gateway, for providers Flare
does not speak (JPush, Huawei Push Kit, Xiaomi, an in-house relay).

The body is JSON with every field of the notification (``body``), sent with ``Content-Type: application/json``,
``Idempotency-Key: <job_id>`` (the same for every retry of a job: a receiver that keeps it can drop repeats) and
``Flare-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` = HMAC-SHA256(secret, ``"<t>.<body>"``), as
Stripe signs its webhooks (flare_im/signing.py, shared with the integration webhooks). A receiver recomputes it
over the raw body, compares in constant time and refuses a ``t`` older than a few minutes (replays).

Answers: 2xx sent; 410 invalid_token (the receiver says the device's registration is dead); 408, 429 and 5xx
retry (with ``Retry-After``); other 4xx failed. Tested against a local receiver that checks the signature
(tests/fakes/webhook.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from flare_im.backends.push.base import (
    FAILED,
    INVALID_TOKEN,
    RETRY,
    SENT,
    Notification,
    PushResult,
    content,
    retry_after_seconds,
    transport_result,
)
from flare_im.backends.push.client import http_client
from flare_im.signing import SIGNATURE_HEADER, signature, verify_signature

__all__ = ["SIGNATURE_HEADER", "WebhookConfig", "WebhookProvider", "body", "signature", "verify_signature"]


def body(n: Notification) -> dict[str, Any]:
    """The JSON a receiver gets: every field of the notification."""
    return {
        "job_id": n.job_id,
        "provider": n.provider,
        "token": n.token,
        "app_id": n.app_id,
        "keys": dict(n.keys),
        **content(n),
    }


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str  # https://… (http:// only for tests on loopback)
    secret: str  # the HMAC key the receiver shares
    ca_file: str = ""  # extra CA bundle to trust
    timeout_s: float = 10.0
    max_connections: int = 50


class WebhookProvider:
    """The webhook adapter (see the module docstring). ``clock`` (epoch seconds) signs the timestamp."""

    name = "webhook"

    def __init__(self, config: WebhookConfig, *, clock: Callable[[], float] = time.time) -> None:
        if not config.secret:
            raise ValueError("a push webhook needs a secret to sign its requests")
        self._config = config
        self._clock = clock
        self._client = http_client(
            http2=False, ca_file=config.ca_file, timeout_s=config.timeout_s, max_connections=config.max_connections
        )

    async def send(self, n: Notification) -> PushResult:
        content = json.dumps(body(n), separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "content-type": "application/json",
            "idempotency-key": n.job_id,
            SIGNATURE_HEADER: signature(self._config.secret, int(self._clock()), content),
        }
        try:
            response = await self._client.post(self._config.url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            return transport_result(exc)
        status = response.status_code
        if 200 <= status < 300:
            return PushResult(SENT, provider_id=response.headers.get("x-request-id", ""), status=status)
        reason = f"{status} {response.reason_phrase}".strip()
        if text := response.text[:200].strip():
            reason = f"{reason}: {text}"
        if status == 410:
            return PushResult(INVALID_TOKEN, reason, status=status)
        if status in (408, 429) or status >= 500:
            return PushResult(RETRY, reason, retry_after_seconds(response.headers.get("retry-after")), status=status)
        return PushResult(FAILED, reason, status=status)

    async def close(self) -> None:
        await self._client.aclose()
