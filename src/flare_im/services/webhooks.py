"""Integration webhooks (R6, docs/integration.md): the node's side.

Endpoints are configured by an administrator (api/webhooks.py) and kept by the webhook store; each node caches the
enabled ones and reloads them when the store's revision moves (at once on the node that changed them, within
``refresh_s`` elsewhere), as the content filter does with its rules.

- ``before_send`` is synchronous: ``screen`` POSTs the message to every endpoint subscribed to it, in turn, before
  the message is stored; each may allow it, reject it (the sender gets error 424 with the endpoint's code and
  reason) or replace its body. A timeout or an error is decided by the endpoint's policy: fail open (the message
  goes on unchanged) or fail closed (refused with 424, retryable). With no such endpoint the router's cost is one
  attribute check (``before_send`` is an empty tuple).
- After-events (``after_send``, ``after_op``, ``membership``, ``presence``, ``push_dropped``) are put on the
  webhooks queue (in-process in ``flare serve``, Kafka in a cluster) only when some endpoint subscribes to their
  type; the webhook worker (webhook_worker.py) delivers them at least once, with retries and dead letters.

Every request is signed (flare_im/signing.py): ``Flare-Signature: t=<unix s>,v1=HMAC-SHA256(secret, "<t>.<body>")``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from flare_im.aio import Repeater
from flare_im.backends.push.base import retry_after_seconds
from flare_im.backends.queue.base import Position
from flare_im.backends.relational.notifications import DEAD, DROPPED, FAILED, NotificationStore, NotifySettings, PushJob
from flare_im.backends.webhooks.base import BEFORE_SEND, FAIL_CLOSED, Endpoint, WebhookStore
from flare_im.backends.webhooks.client import HttpError, WebhookHttpClient
from flare_im.ids import now_ms
from flare_im.observability import tracing
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import Message
from flare_im.services.message_kinds import OP_KINDS, SYSTEM, check_size, validate_body
from flare_im.services.router import Fanout, FanoutDecorator
from flare_im.signing import SIGNATURE_HEADER, signature

log = logging.getLogger(__name__)

MAX_REASON = 500  # characters of an endpoint's reason shown to the sender
MAX_CODE = 64
MAX_ANSWER_BYTES = 1024 * 1024  # a before_send answer larger than this is an error


class WebhookEvent(msgspec.Struct, array_like=True):
    """One after-event on the webhooks queue: what is POSTed as ``{"id", "type", "ts", "data"}``."""

    id: str  # the same for every delivery and retry of this event (receivers deduplicate on it)
    type: str
    ts: int  # epoch ms
    data: dict[str, Any]


encode_event = msgspec.msgpack.Encoder().encode
decode_event = msgspec.msgpack.Decoder(WebhookEvent).decode
Publish = Callable[[str, str, bytes], Awaitable[Position]]


def event_json(event: WebhookEvent) -> str:
    return json.dumps(
        {"id": event.id, "type": event.type, "ts": event.ts, "data": event.data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def event_type_of(kind: str) -> str:
    """The after-event of a stored event of ``kind``: an operation, a system notice (membership), or a message."""
    if kind in OP_KINDS:
        return "after_op"
    if kind == SYSTEM:
        return "membership"
    return "after_send"


def message_data(message: Message) -> dict[str, Any]:
    return {
        "conv": message.conv,
        "seq": message.seq,
        "msg_id": message.msg_id,
        "sender": message.sender,
        "cmid": message.cmid,
        "kind": message.kind,
        "body": message.body,
        "ts": message.ts,
    }


@dataclass(frozen=True, slots=True)
class PostResult:
    ok: bool
    status: int = 0  # 0: no answer (timeout, connection refused)
    error: str = ""  # why it failed: the status and the start of the answer, or the transport error
    body: bytes = b""
    retry_after_s: float | None = None


class Webhooks:
    """The node's endpoint cache, the before_send check and the after-event emitter."""

    def __init__(
        self,
        store: WebhookStore,
        client: WebhookHttpClient,
        *,
        publish: Publish | None = None,
        topic: str = "",
        refresh_s: float = 2.0,
        max_body_bytes: int = 16 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._client = client
        self._publish = publish
        self._topic = topic
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._revision: int | None = None
        self._by_id: dict[str, Endpoint] = {}
        self._by_event: dict[str, tuple[Endpoint, ...]] = {}
        # What the hot paths look at: both empty when nothing subscribes (one attribute check each).
        self.before_send: tuple[Endpoint, ...] = ()
        self.after: frozenset[str] = frozenset()
        self._refresher = Repeater(self.reload, refresh_s, what="reloading the webhook endpoints")
        self._watching: set[asyncio.Future[Any]] = set()
        self.published = 0
        self.publish_failed = 0
        self.screened = 0
        self.screen_failures = 0

    # ------------------------------------------------------------------ endpoints

    async def reload(self, *, force: bool = False) -> None:
        """Read the endpoints again when their revision moved (or ``force``)."""
        revision = await self.store.endpoints_revision()
        if revision == self._revision and not force:
            return
        endpoints = [e for e in await self.store.endpoints() if e.enabled]
        by_event: dict[str, list[Endpoint]] = {}
        for endpoint in endpoints:
            for event in endpoint.events:
                by_event.setdefault(event, []).append(endpoint)
        self._by_id = {e.endpoint_id: e for e in endpoints}
        self._by_event = {event: tuple(found) for event, found in by_event.items()}
        self.before_send = self._by_event.get(BEFORE_SEND, ())
        self.after = frozenset(event for event in self._by_event if event != BEFORE_SEND)
        self._revision = revision

    def subscribers(self, event: str) -> tuple[Endpoint, ...]:
        """The enabled endpoints subscribed to ``event``, by id."""
        return self._by_event.get(event, ())

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint if it exists and is enabled."""
        return self._by_id.get(endpoint_id)

    def start(self) -> None:
        self._refresher.start()

    async def close(self) -> None:
        """Stop refreshing (the HTTP client stays open: the worker may still be sending)."""
        await self._refresher.close()

    async def close_client(self) -> None:
        await self._client.close()

    # ------------------------------------------------------------------ HTTP

    async def post(self, endpoint: Endpoint, content: bytes, headers: dict[str, str]) -> PostResult:
        """POST ``content`` signed with the endpoint's secret, within its timeout (the whole exchange)."""
        signed = {
            "content-type": "application/json",
            "user-agent": "flare-webhooks/1",
            SIGNATURE_HEADER: signature(endpoint.secret, int(self._clock()), content),
            **headers,
        }
        try:
            async with asyncio.timeout(endpoint.timeout_ms / 1000):
                answer = await self._client.post(endpoint.url, content, signed)
        except TimeoutError:
            return PostResult(False, error=f"timeout after {endpoint.timeout_ms} ms")
        except HttpError as exc:
            return PostResult(False, error=str(exc)[:300])
        status = answer.status
        if 200 <= status < 300:
            return PostResult(True, status, body=answer.body)
        reason = f"{status} {answer.reason}".strip()
        if text := answer.body[:200].decode(errors="replace").strip():
            reason = f"{reason}: {text}"
        return PostResult(False, status, reason, retry_after_s=retry_after_seconds(answer.headers.get("retry-after")))

    # ------------------------------------------------------------------ before_send

    async def screen(
        self, sender: str, conv: str, cmid: str, kind: str, body: dict[str, Any], *, device: str, trusted: bool
    ) -> dict[str, Any]:
        """Ask every before_send endpoint in turn; returns the body to store (replaced or not), or raises 424."""
        for endpoint in self.before_send:
            event_id = f"bs_{uuid.uuid4().hex}"
            data = {"conv": conv, "sender": sender, "device": device, "cmid": cmid, "kind": kind, "body": body}
            content = json.dumps(
                {"id": event_id, "type": BEFORE_SEND, "ts": now_ms(), "data": data},
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode()
            headers = {"flare-event": BEFORE_SEND, "flare-delivery": f"{endpoint.endpoint_id}|{event_id}"}
            if tracing.ENABLED:  # the endpoint joins the send's trace
                tracing.http_headers(headers)
            result = await self.post(endpoint, content, headers)
            self.screened += 1
            if not result.ok:
                body = self._unanswered(endpoint, body, result.error)
                continue
            body = self._verdict(endpoint, kind, body, result.body, trusted=trusted)
        return body

    def _verdict(
        self, endpoint: Endpoint, kind: str, body: dict[str, Any], answer: bytes, *, trusted: bool
    ) -> dict[str, Any]:
        if not answer.strip():  # 204 or an empty 200: allowed
            return body
        try:
            verdict = json.loads(answer) if len(answer) <= MAX_ANSWER_BYTES else None
        except ValueError:
            verdict = None
        if not isinstance(verdict, dict):
            return self._unanswered(endpoint, body, "the answer is not a JSON object")
        action = verdict.get("action", "allow")
        if action == "allow":
            return body
        if action == "reject":
            code, reason = verdict.get("code", "rejected"), verdict.get("reason", "")
            code = code[:MAX_CODE] if isinstance(code, str) and code else "rejected"
            reason = reason[:MAX_REASON] if isinstance(reason, str) else ""
            raise FlareError(
                ErrorCode.REJECTED,
                reason or "the message was refused",
                retryable=False,
                detail={"code": code, "reason": reason},
            )
        if action == "replace":
            replaced = verdict.get("body")
            if not isinstance(replaced, dict):
                return self._unanswered(endpoint, body, "replace without an object body")
            try:
                if trusted:
                    check_size(replaced, self._max_body_bytes)
                else:
                    validate_body(kind, replaced, self._max_body_bytes)
            except FlareError as exc:
                return self._unanswered(endpoint, body, f"the replacement body is not valid: {exc.message}")
            return replaced
        return self._unanswered(endpoint, body, f"unknown action {str(action)[:40]!r}")

    def _unanswered(self, endpoint: Endpoint, body: dict[str, Any], why: str) -> dict[str, Any]:
        """No usable answer: the endpoint's policy decides."""
        self.screen_failures += 1
        log.warning("before_send webhook %s: %s (fail %s)", endpoint.endpoint_id, why, endpoint.policy)
        if endpoint.policy == FAIL_CLOSED:
            raise FlareError(
                ErrorCode.REJECTED,
                "the message could not be checked; try again later",
                retryable=True,
                detail={"code": "unavailable", "reason": ""},
            )
        return body

    # ------------------------------------------------------------------ after-events

    def emit(self, event_type: str, event_id: str, key: str, data: dict[str, Any], ts: int = 0) -> None:
        """Queue an after-event when some endpoint subscribes to its type; never blocks nor raises."""
        if event_type not in self.after or self._publish is None:
            return
        record = encode_event(WebhookEvent(event_id, event_type, ts or now_ms(), data))
        try:
            stored = self._publish(self._topic, key, record)
        except Exception as exc:
            self._failed(exc)
            return
        self.published += 1
        task = asyncio.ensure_future(stored)
        if task.done():
            self._check(task)
        else:
            self._watching.add(task)
            task.add_done_callback(self._check)

    def _check(self, stored: asyncio.Future[Any]) -> None:
        self._watching.discard(stored)
        if not stored.cancelled() and stored.exception() is not None:
            self._failed(stored.exception())

    def _failed(self, exc: BaseException | None) -> None:
        self.publish_failed += 1
        log.warning("a webhook event was not queued (%r); it is not delivered", exc)

    def message(self, message: Message) -> None:
        self.emit(event_type_of(message.kind), f"m_{message.msg_id}", message.conv, message_data(message), message.ts)

    def presence(self, user: str, online: bool, last_seen: int) -> None:
        ts = now_ms()
        state = "online" if online else "offline"
        data = {"user": user, "state": state, "last_seen": last_seen}
        self.emit("presence", f"p_{user}_{state}_{ts}", user, data, ts)

    def push_dropped(self, jobs: Iterable[PushJob]) -> None:
        if "push_dropped" not in self.after:
            return
        for j in jobs:
            if j.state not in (DROPPED, FAILED, DEAD) or j.reason == "online" or j.reason.startswith("collapsed"):
                continue  # a device that is online syncs instead; a collapsed one is in a summary
            data = {
                "job_id": j.job_id,
                "user": j.uid,
                "device": j.device,
                "provider": j.provider,
                "category": j.category,
                "conv": j.conv,
                "seq": j.seq,
                "state": j.state,
                "reason": j.reason,
            }
            self.emit("push_dropped", f"d_{j.job_id}", j.conv or j.uid, data, j.updated_at)


class WebhookFanout(FanoutDecorator):
    """The services' Fanout, decorated: every stored event they deliver is also an after-event (after_send,
    after_op, membership) when some endpoint subscribes to its type; nothing more when none does."""

    def __init__(self, inner: Fanout, webhooks: Webhooks) -> None:
        super().__init__(inner)
        self._webhooks = webhooks

    def deliver_message(self, uids: Iterable[str], message: Message, *, skip: tuple[str, str] | None) -> None:
        self._inner.deliver_message(uids, message, skip=skip)
        if self._webhooks.after:
            self._webhooks.message(message)


class DropReportingJobs:
    """The push worker's NotificationStore, decorated: jobs recorded as dropped, failed or dead become
    ``push_dropped`` after-events (once recorded, so a job is reported when its state is durable)."""

    def __init__(self, inner: NotificationStore, webhooks: Webhooks) -> None:
        self._inner = inner
        self._webhooks = webhooks

    async def record_push_jobs(self, jobs: Sequence[PushJob], *, only_new: bool = False) -> None:
        await self._inner.record_push_jobs(jobs, only_new=only_new)
        if self._webhooks.after:
            self._webhooks.push_dropped(jobs)

    async def notify_settings(self, uids: Sequence[str]) -> dict[str, NotifySettings]:
        return await self._inner.notify_settings(uids)

    async def put_notify_settings(self, settings: NotifySettings) -> None:
        await self._inner.put_notify_settings(settings)

    async def claim_push_jobs(self, jobs: Sequence[PushJob], now: int, lease_ms: int) -> set[str]:
        return await self._inner.claim_push_jobs(jobs, now, lease_ms)

    async def schedule_push_job(self, job: PushJob) -> bool:
        return await self._inner.schedule_push_job(job)

    async def take_due_push_jobs(self, now: int, lease_ms: int, limit: int) -> list[PushJob]:
        return await self._inner.take_due_push_jobs(now, lease_ms, limit)

    async def push_jobs(
        self, uid: str, *, device: str = "", state: str = "", since: int = 0, limit: int = 100
    ) -> list[PushJob]:
        return await self._inner.push_jobs(uid, device=device, state=state, since=since, limit=limit)

    async def push_job_outcomes(self, since: int, until: int, limit: int) -> list[tuple[str, str, str, int]]:
        return await self._inner.push_job_outcomes(since, until, limit)

    async def purge_push_jobs(self, before: int) -> int:
        return await self._inner.purge_push_jobs(before)
