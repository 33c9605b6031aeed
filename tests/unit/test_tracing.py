"""Tracing settings and helpers (observability/tracing.py); the spans themselves: tests/e2e/test_tracing.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flare_im.backends.queue.base import Record
from flare_im.backends.queue.memory import MemoryConsumer, MemoryProducer, MemoryQueueBroker
from flare_im.backends.webhooks.base import Delivery, Endpoint
from flare_im.config import Settings
from flare_im.observability import logs, tracing
from flare_im.services.webhook_worker import WebhookWorker
from flare_im.services.webhooks import PostResult, WebhookEvent, encode_event


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"FLARE_OTEL_SAMPLE_RATIO": "1.5"}, "otel_sample_ratio"),
        ({"FLARE_OTEL_SAMPLE_RATIO": "-0.1"}, "otel_sample_ratio"),
        ({"FLARE_OTEL_ENDPOINT": "grpc://collector:4317"}, "otel_endpoint"),
        ({"FLARE_OTEL_ENDPOINT": "collector:4318"}, "otel_endpoint"),
    ],
)
def test_bad_tracing_settings_are_refused(env: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Settings.load(environ=env)


def test_off_by_default_and_nothing_set_up() -> None:
    settings = Settings.load(environ={})
    assert settings.otel_endpoint == ""
    assert tracing.configure(settings, "serve") is False
    assert tracing.ENABLED is False
    assert logs._trace_ids is None


def test_traces_url() -> None:
    assert tracing.traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert tracing.traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert tracing.traces_url("https://c/otlp/v1/traces") == "https://c/otlp/v1/traces"


def test_records_without_a_sampled_context_get_no_span() -> None:
    tracing.configure(Settings.load(environ={"FLARE_OTEL_ENDPOINT": "http://127.0.0.1:9"}), "test")
    try:
        assert tracing.ENABLED
        assert logs._trace_ids is not None
        assert tracing.kafka_headers() is None  # no current span: nothing to carry
        assert tracing.child("flare.send.append") is None  # nor any child span
        plain = Record("t", 0, 1, "k", b"v")
        other = Record("t", 0, 2, "k", b"v", (("other", b"x"),))
        unsampled = Record("t", 0, 3, "k", b"v", (("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-00"),))
        sampled = Record("t", 0, 4, "k", b"v", (("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"),))
        spans = tracing.record_spans("flare.store.write", [plain, other, unsampled, sampled])
        assert [s.is_recording() for s in spans] == [False, True]  # the unsampled parent: a no-op span
        context = spans[1].get_span_context()
        assert format(context.trace_id, "032x") == "1" * 32
        # not ended: nothing is exported to the closed port
    finally:
        tracing.shutdown()
    assert tracing.ENABLED is False
    assert logs._trace_ids is None


# ------------------------------------------------------------------------ an after-event through the in-process queue

ENDPOINT = Endpoint("wh_1", "http://127.0.0.1:9/hook", "secret", ("after_send",))


class _Store:
    """The webhook store's part the worker uses (no retries are due)."""

    def __init__(self) -> None:
        self.recorded: list[Delivery] = []
        self.any_recorded = asyncio.Event()

    async def add_deliveries(self, deliveries: Sequence[Delivery], now: int, lease_ms: int) -> set[str]:
        return {d.delivery_id for d in deliveries}

    async def take_due(self, now: int, lease_ms: int, limit: int) -> list[Delivery]:
        return []

    async def purge_deliveries(self, before: int) -> int:
        return 0

    async def record_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        self.recorded.extend(deliveries)
        self.any_recorded.set()


class _Hooks:
    """One endpoint subscribed to after_send; its requests' headers are kept instead of sent."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    def subscribers(self, event: str) -> tuple[Endpoint, ...]:
        return (ENDPOINT,) if event == "after_send" else ()

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        return ENDPOINT if endpoint_id == ENDPOINT.endpoint_id else None

    async def post(self, endpoint: Endpoint, content: bytes, headers: dict[str, str]) -> PostResult:
        self.headers.append(dict(headers))
        return PostResult(True, 200)


async def _publish_and_deliver(publisher: Any) -> tuple[Record, dict[str, str], Any]:
    """An after_send event published under ``publisher``'s current span on an in-process queue, then delivered by
    the webhook worker: the record as queued, the request's headers, the publishing span."""
    broker = MemoryQueueBroker()
    broker.create_topic("hooks", 1)
    producer = MemoryProducer(broker)
    with publisher.start_as_current_span("publisher") as published:
        await producer.publish("hooks", "d:a:b", encode_event(WebhookEvent("m_1", "after_send", 1, {"seq": 1})))
    [record] = broker.topics["hooks"][0].records
    consumer = MemoryConsumer(broker, ["hooks"], "group")
    await consumer.start()
    hooks, store = _Hooks(), _Store()
    worker = WebhookWorker(store=store, webhooks=hooks)  # type: ignore[arg-type]
    task = asyncio.ensure_future(worker.run(consumer))
    try:
        await asyncio.wait_for(store.any_recorded.wait(), 5)
    finally:
        await consumer.close()
        await task
        await worker.drain(1.0)
    [headers] = hooks.headers
    return record, headers, published


def _sdk_tracer() -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


async def test_tracing_off_puts_nothing_in_records_or_requests_even_under_a_sampled_span() -> None:
    # Off (the default) while something else in the process traces: no header rides in the queue's record, no
    # traceparent in the endpoint's request, and the worker makes no span.
    assert tracing.ENABLED is False
    tracer, exporter = _sdk_tracer()
    record, headers, published = await _publish_and_deliver(tracer)
    assert published.get_span_context().trace_flags.sampled
    assert record.headers == ()
    assert "traceparent" not in headers
    assert "tracestate" not in headers
    assert [s.name for s in exporter.get_finished_spans()] == ["publisher"]


async def test_tracing_on_carries_the_context_through_the_queue_to_the_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracer, exporter = _sdk_tracer()
    monkeypatch.setattr(tracing, "ENABLED", True)
    monkeypatch.setattr(tracing, "_tracer", tracer)
    record, headers, published = await _publish_and_deliver(tracer)
    trace_id = format(published.get_span_context().trace_id, "032x")
    span_id = format(published.get_span_context().span_id, "016x")
    assert dict(record.headers)["traceparent"].decode().split("-")[1:3] == [trace_id, span_id]
    spans: dict[str, ReadableSpan] = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"publisher", "flare.webhook.event", "flare.webhook.deliver"}
    event, deliver = spans["flare.webhook.event"], spans["flare.webhook.deliver"]
    assert event.parent is not None
    assert event.parent.span_id == published.get_span_context().span_id
    assert deliver.parent is not None
    assert deliver.parent.span_id == event.context.span_id
    assert dict(event.attributes or {})["messaging.destination.name"] == "hooks"
    attributes = dict(deliver.attributes or {})
    assert attributes["flare.webhook.endpoint"] == "wh_1"
    assert attributes["flare.webhook.state"] == "delivered"
    assert attributes["http.response.status_code"] == 200
    assert headers["traceparent"].split("-")[1:3] == [trace_id, format(deliver.context.span_id, "016x")]
