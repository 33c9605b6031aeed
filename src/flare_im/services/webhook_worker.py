"""The webhook worker: after-events from the webhooks queue into signed POSTs to the endpoints subscribed to them,
at least once each.

For every batch of events (services/webhooks.py) it stores one delivery per (subscribed endpoint, event) in the
webhook store — ``pending`` and leased to this worker — commits the queue offsets, and sends them in the background
(each outcome recorded as it comes, many per write), so one slow endpoint does not hold up the queue or the others:
it holds at most ``max_in_flight_per_endpoint`` requests, and all sends together at most ``max_in_flight``. A delivery's
id is the endpoint's and the event's, so an event redelivered by the queue (a worker killed before committing)
makes no second delivery; a worker killed after storing and before recording an outcome leaves the delivery
pending, and when its lease runs out the due loop of any worker sends it again. Hence *at least once*: a receiver
may see one event twice and deduplicates on the event's ``id`` (also in ``Idempotency-Key``).

A 2xx answer delivers. Anything else (another status, a timeout, a refused connection) is retried with exponential
backoff and full jitter (at least the answer's ``Retry-After``), up to ``max_tries`` sends; then the delivery is
``dead``: the dead-letter list, kept with its payload and last error, which an administrator lists and replays.

Not guaranteed: order. Deliveries of one endpoint are sent concurrently and retried independently; a receiver that
needs order uses the events' ``ts`` and, for messages, ``data.seq``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from flare_im.aio import GroupWriter
from flare_im.backends.webhooks.base import DEAD, DELIVERED, PENDING, Delivery, WebhookStore
from flare_im.observability import tracing
from flare_im.services.webhooks import PostResult, Webhooks, decode_event, event_json

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebhookWorkerConfig:
    max_tries: int = 8  # sends of a delivery before it is dead
    backoff_s: float = 2.0  # first retry delay; doubles each try (full jitter), at least Retry-After
    backoff_max_s: float = 900.0
    lease_s: float = 60.0  # a delivery taken by a worker that did not record it within this is sent again
    max_in_flight: int = 1_000  # deliveries being sent at once, all endpoints (the queue waits beyond)
    max_in_flight_per_endpoint: int = 32  # requests at once to one endpoint
    batch: int = 500  # events per queue batch
    due_poll_s: float = 0.5  # how often due retries are looked for
    due_batch: int = 200
    retention_s: float = 7 * 86400.0  # delivered and dead deliveries are kept this long
    purge_every_s: float = 3600.0


class Consumer(Protocol):
    def batches(self, max_records: int, timeout_s: float) -> Any: ...


def backoff_s(tries: int, config: WebhookWorkerConfig, rng: random.Random, retry_after: float | None) -> float:
    """Delay before try ``tries + 1``: exponential with full jitter, capped, never below ``retry_after``."""
    ceiling = min(config.backoff_max_s, config.backoff_s * 2 ** max(0, tries - 1))
    return max(rng.uniform(ceiling / 2, ceiling), retry_after or 0.0)


class WebhookWorker:
    def __init__(
        self,
        *,
        store: WebhookStore,
        webhooks: Webhooks,
        config: WebhookWorkerConfig | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        """``webhooks``: the endpoint cache (refreshed by its owner) and the signed POST; ``clock``: epoch s."""
        self._store = store
        self._webhooks = webhooks
        self.config = config or WebhookWorkerConfig()
        self._clock = clock
        self._rng = rng or random.Random()
        self._room = asyncio.Semaphore(self.config.max_in_flight)
        self._per_endpoint: dict[str, asyncio.Semaphore] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._recorder = GroupWriter(store.record_deliveries)
        self._next_purge = 0.0
        self.delivered = 0
        self.failed = 0
        self.dead = 0

    async def run(self, consumer: Consumer) -> None:
        """Consume events until the consumer closes; send due retries between batches."""
        next_due = 0.0
        async for batch in consumer.batches(self.config.batch, self.config.due_poll_s):
            if batch.records:
                events = [decode_event(r.value) for r in batch.records]
                # Tracing on: a span per event published under a sampled trace, its publisher's span the parent.
                spans = tracing.batch_spans("flare.webhook.event", batch.records) if tracing.ENABLED else None
                handle = functools.partial(self.handle, events, spans)
                await self._until_done(handle, f"{len(events)} webhook events")
                try:
                    await batch.commit()
                except Exception as exc:  # redelivered: its deliveries are stored, nothing is sent twice
                    log.warning("webhook batch not committed (%r); it will be delivered again", exc)
                if spans:  # the sends started go on under their own spans
                    tracing.end_all([s for s in spans if s is not None])
            if time.monotonic() >= next_due:
                next_due = time.monotonic() + self.config.due_poll_s
                await self._until_done(self.run_due, "due webhook deliveries")
                await self._until_done(self.purge, "purging old webhook deliveries")

    async def _until_done(self, step: Callable[[], Awaitable[Any]], what: str) -> None:
        while True:
            try:
                await step()
                return
            except Exception:  # the store is unavailable: keep the batch (uncommitted) and retry
                log.exception("%s failed; retrying", what)
                await asyncio.sleep(1.0)

    async def handle(self, events: Sequence[Any], spans: Sequence[Span | None] | None = None) -> None:
        """Store the deliveries of a batch of events, then send the ones this call stored (idempotent).
        ``spans``: each event's span (tracing), parent of its deliveries' requests."""
        now = int(self._clock() * 1000)
        deliveries = [
            Delivery(
                delivery_id=f"{endpoint.endpoint_id}|{event.id}",
                endpoint_id=endpoint.endpoint_id,
                event=event.type,
                event_id=event.id,
                payload=event_json(event),
                next_at=now,
                created_at=event.ts,
                updated_at=now,
            )
            for event in events
            for endpoint in self._webhooks.subscribers(event.type)
        ]
        parents: dict[str, Span] = {}  # event id -> its span
        if spans:
            for event, span in zip(events, spans, strict=True):
                if span is not None:
                    parents[event.id] = span
                    span.set_attributes({"flare.webhook.event": event.type, "flare.webhook.event_id": event.id})
        if not deliveries:
            return
        added = await self._store.add_deliveries(deliveries, now, int(self.config.lease_s * 1000))
        await self._send_all([d for d in deliveries if d.delivery_id in added], parents)

    async def run_due(self) -> int:
        """Send the deliveries due for a retry (and those whose worker died holding them)."""
        now = int(self._clock() * 1000)
        due = await self._store.take_due(now, int(self.config.lease_s * 1000), self.config.due_batch)
        await self._send_all(due)
        return len(due)

    async def purge(self) -> int:
        now = self._clock()
        if now < self._next_purge:
            return 0
        self._next_purge = now + self.config.purge_every_s
        return await self._store.purge_deliveries(int((now - self.config.retention_s) * 1000))

    async def _send_all(self, deliveries: Sequence[Delivery], parents: dict[str, Span] | None = None) -> None:
        """Start sending ``deliveries`` in the background; returns once each has a slot (backpressure).
        ``parents``: event id -> the span its deliveries' requests are children of (tracing)."""
        for d in deliveries:
            await self._room.acquire()
            task = asyncio.ensure_future(self._send_and_record(d, parents.get(d.event_id) if parents else None))
            self._in_flight.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._room.release()
        if not task.cancelled() and task.exception() is not None:
            log.warning("recording a webhook delivery failed (%r); it is sent again after its lease", task.exception())

    async def _send_and_record(self, d: Delivery, parent: Span | None = None) -> None:
        if parent is None:
            await self._recorder.record(await self._send(d))
            return
        attributes = {
            "flare.webhook.endpoint": d.endpoint_id,
            "flare.webhook.event": d.event,
            "flare.webhook.try": d.tries + 1,
        }
        span = tracing.start_client("flare.webhook.deliver", parent, attributes)
        with tracing.current(span):  # its traceparent goes with the request (_send)
            done = await self._send(d, span)
        tracing.finish(span, {"flare.webhook.state": done.state}, error=done.last_error[:200])
        await self._recorder.record(done)

    async def drain(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the deliveries being sent; the rest are cancelled (still pending in the
        store, they are sent again after their lease)."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout_s)
        await self.abort()

    async def abort(self) -> None:
        """Stop at once, as a killed process would: deliveries being sent stay pending (leased) in the store."""
        tasks = set(self._in_flight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _send(self, d: Delivery, span: Span | None = None) -> Delivery:
        """Send once; returns the delivery in its new state (not yet recorded). ``span``: the request's, traced."""
        endpoint = self._webhooks.endpoint(d.endpoint_id)
        tries = d.tries + 1
        if endpoint is None:  # disabled (a deleted one's rows are gone, and the record ignored)
            ok, error, retry_after = False, "endpoint disabled", None
        else:
            headers = {
                "flare-event": d.event,
                "flare-delivery": d.delivery_id,
                "flare-attempt": str(tries),
                "idempotency-key": d.event_id,
            }
            if span is not None:  # the endpoint's own tracing joins the trace (W3C traceparent)
                tracing.http_headers(headers)
            slots = self._per_endpoint.get(d.endpoint_id)
            if slots is None:
                slots = self._per_endpoint[d.endpoint_id] = asyncio.Semaphore(self.config.max_in_flight_per_endpoint)
            async with slots:
                result = await self._webhooks.post(endpoint, d.payload.encode(), headers)
            ok, error, retry_after = result.ok, result.error, result.retry_after_s
            if span is not None:
                span.set_attributes(_http_attributes(endpoint.url, result))
        now = self._clock()
        updated_at = int(now * 1000)
        if ok:
            self.delivered += 1
            return replace(d, state=DELIVERED, tries=tries, next_at=0, last_error="", updated_at=updated_at)
        self.failed += 1
        if tries >= self.config.max_tries:
            self.dead += 1
            log.warning("webhook delivery %s is dead after %d tries: %s", d.delivery_id, tries, error)
            return replace(d, state=DEAD, tries=tries, next_at=0, last_error=error[:500], updated_at=updated_at)
        next_at = int((now + backoff_s(tries, self.config, self._rng, retry_after)) * 1000)
        return replace(d, state=PENDING, tries=tries, next_at=next_at, last_error=error[:500], updated_at=updated_at)


def _http_attributes(url: str, result: PostResult) -> dict[str, Any]:
    attributes: dict[str, Any] = {"http.request.method": "POST", "server.address": urlsplit(url).hostname or ""}
    if result.status:  # 0: no answer
        attributes["http.response.status_code"] = result.status
    return attributes
