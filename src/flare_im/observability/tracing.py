"""OpenTelemetry tracing (docs/operations.md, Tracing): off unless ``otel_endpoint`` is set.

Off, the hot paths pay one attribute check (``tracing.ENABLED``) and nothing else: no tracer, no context
lookups, no Kafka headers, and the ASGI middleware is not even installed. On, spans go to an OTLP/HTTP
collector in batches (the SDK's BatchSpanProcessor, off the event loop), sampled by a parent-based ratio
sampler: a request or send that arrives with a sampled ``traceparent`` is traced whatever the ratio.

Spans: ``<METHOD> <route template>`` per REST request; ``flare.ws.send`` per WebSocket send with children
``flare.send.append`` (sequence + durable append, Kafka's acks=all in a cluster) and ``flare.send.fanout``;
``flare.store.write`` in the store worker per record that carries a sampled context in its Kafka headers;
``flare.push.event`` and ``flare.webhook.event`` likewise in the push and webhook workers, each with a CLIENT child
per provider request (``flare.push.deliver``) or endpoint request (``flare.webhook.deliver``, which passes its
``traceparent`` on to the endpoint).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flare_im.observability import logs

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from flare_im.config import Settings

log = logging.getLogger(__name__)

ENABLED = False  # read on the hot paths; True between configure() and shutdown()
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator()
_ratio = 0.0  # otel_sample_ratio


def sampled() -> bool:
    """Whether to start a new trace (a send or request without a caller's context): one random draw."""
    return random.random() < _ratio


def configure(settings: Settings, role: str) -> bool:
    """Start exporting this process's spans if ``otel_endpoint`` is set; returns whether tracing is on."""
    global ENABLED, _tracer, _provider, _ratio
    shutdown()
    if not settings.otel_endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the settings win over it.
    resource = Resource.create({"service.name": settings.otel_service_name, "flare.role": role})
    # New traces are sampled here, before any span exists (``sampled``): an unsampled send or request makes
    # no span at all. The SDK's sampler only follows a parent's decision.
    provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    # The BatchSpanProcessor honours OTEL_BSP_* (delay, queue and batch sizes), the exporter OTEL_EXPORTER_OTLP_HEADERS.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(settings.otel_endpoint))))
    _provider, _tracer = provider, provider.get_tracer("flare_im")
    _ratio = settings.otel_sample_ratio
    logs.set_trace_ids(current_ids)
    ENABLED = True
    log.info("tracing to %s (sample ratio %g)", traces_url(settings.otel_endpoint), settings.otel_sample_ratio)
    return True


def traces_url(endpoint: str) -> str:
    """A collector's base URL (``http://collector:4318``) gets the OTLP/HTTP traces path; a full one is kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def shutdown() -> None:
    """Export what is pending (blocks up to the exporter's timeout) and turn tracing off."""
    global ENABLED, _tracer, _provider
    ENABLED = False
    logs.set_trace_ids(None)
    provider, _provider, _tracer = _provider, None, trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def current_ids() -> dict[str, str] | None:
    """The current span's ids for a log line (observability/logs.py), if it is sampled (exported)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.trace_flags.sampled:
        return None
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


# ------------------------------------------------------------------------ the send path


async def traced_send(send: Awaitable[None], user: str, device: str, conv: str, kind: str) -> None:
    """Run a WebSocket send (gateway/connection.py ``_send``) under its ``flare.ws.send`` span."""
    attributes = {"flare.user": user, "flare.device": device, "flare.conv": conv, "flare.kind": kind}
    with _tracer.start_as_current_span("flare.ws.send", kind=SpanKind.SERVER, attributes=attributes):
        await send


def refused(code: int) -> None:
    """The current span's request was refused with protocol error ``code`` (protocol/errors.py)."""
    span = trace.get_current_span()
    span.set_attribute("flare.error", int(code))
    span.set_status(Status(StatusCode.ERROR, str(int(code))))


class Child:
    """A child span made current in this task until ``end``: the Kafka headers of what is published meanwhile
    name it. A send that raises leaves it unended (not exported); its parent records the error."""

    __slots__ = ("_span", "_token")

    def __init__(self, name: str) -> None:
        self._span = _tracer.start_span(name)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def end(self, **attributes: Any) -> None:
        otel_context.detach(self._token)
        if attributes:
            self._span.set_attributes(attributes)
        self._span.end()


def child(name: str) -> Child | None:
    """A ``Child`` of the current span if that one is sampled; else None: an unsampled send makes no more spans."""
    return Child(name) if trace.get_current_span().is_recording() else None


def kafka_headers() -> list[tuple[str, bytes]] | None:
    """W3C ``traceparent`` (and ``tracestate``) of the current span for a Kafka record, if it is sampled:
    an unsampled send puts nothing in the record, so consumers do no tracing work for it."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.trace_flags.sampled:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return [(name, value.encode()) for name, value in carrier.items()]


# ------------------------------------------------------------------------ consumers


def record_spans(name: str, records: Sequence[Any], *, group: str = "") -> list[Span]:
    """One started consumer span per record whose headers carry a sampled trace context, as its child (the
    batch's other records get none). End them with ``end_all`` once the batch is done."""
    spans = (record_span(name, r, len(records), group=group) for r in records)
    return [s for s in spans if s is not None]


def record_span(name: str, record: Any, batch_size: int, *, group: str = "") -> Span | None:
    """A started consumer span for ``record``, a child of the context in its headers; None without one."""
    headers = getattr(record, "headers", None)
    if not headers:
        return None
    carrier = {k: v.decode("latin-1") for k, v in headers if k in ("traceparent", "tracestate")}
    if "traceparent" not in carrier:
        return None
    parent = _propagator.extract(carrier)
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
        "messaging.kafka.message.key": record.key,
        "messaging.batch.message_count": batch_size,
    }
    if group:
        attributes["messaging.consumer.group.name"] = group
    return _tracer.start_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes)


def batch_spans(name: str, records: Sequence[Any], *, group: str = "") -> list[Span | None] | None:
    """``record_span`` for each of ``records``, in order (None for a record without a sampled context); None
    when no record has one, so a worker's untraced batch takes its untraced path."""
    spans = [record_span(name, r, len(records), group=group) for r in records]
    return spans if any(s is not None for s in spans) else None


def start_client(name: str, parent: Span, attributes: dict[str, Any]) -> Span:
    """A started CLIENT span under ``parent`` (a worker's request to a provider or an endpoint), not current:
    make it so with ``current`` while the request runs."""
    return _tracer.start_span(
        name, context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT, attributes=attributes
    )


def current(span: Span) -> AbstractContextManager[Span]:
    """Make ``span`` current in this block (an exception leaving it is recorded on it); it is not ended."""
    return trace.use_span(span, end_on_exit=False)


def finish(span: Span, attributes: dict[str, Any], *, error: str = "") -> None:
    """Set the outcome's attributes on ``span`` (``error``: why it failed, an error status) and end it."""
    span.set_attributes(attributes)
    if error:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def http_headers(headers: dict[str, str]) -> None:
    """Add the current span's W3C ``traceparent`` (and ``tracestate``) to an outgoing HTTP request's headers,
    if it is sampled, so the receiving service joins the trace."""
    if trace.get_current_span().get_span_context().trace_flags.sampled:
        _propagator.inject(headers)


def end_all(spans: Sequence[Span], error: BaseException | None = None) -> None:
    for span in spans:
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()


# ------------------------------------------------------------------------ REST


class TracingMiddleware:
    """ASGI: a SERVER span per HTTP request, named by the route template (``POST /v1/conversations/{conv}/
    messages``), current while the app runs so the request's log lines carry its ids. Installed only when
    tracing is on. A request's incoming ``traceparent`` makes it a child of the caller's span."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in (b"traceparent", b"tracestate")
        }
        if not carrier and not sampled():  # a new trace, not kept: no span, the app as if tracing were off
            await self.app(scope, receive, send)
            return
        parent = _propagator.extract(carrier) if carrier else None
        method = scope.get("method", "GET")
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        attributes = {"http.request.method": method, "url.path": scope.get("path", "")}
        with _tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None)  # set by the router on the shared scope
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status or 500)
                if not status or status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
