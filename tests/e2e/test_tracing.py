"""OpenTelemetry tracing (docs/operations.md, Tracing) against an OTLP/HTTP receiver the test runs: spans of a
real `flare serve` (REST and WebSocket sends), their ids in the JSON log lines, the trace carried across Kafka
to `flare worker store`, `flare worker push` and `flare worker webhooks` processes (and from the webhook worker
to the endpoint, in ``traceparent``), and nothing exported when tracing is off or the sample ratio is 0."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from tests.fakes.server import FakeProvider, Request, Response, running

from flare_im.devcluster import Cluster, Proc, free_port
from flare_im.sdk.client import FlareClient, direct_conv
from flare_im.sdk.rest import RestClient

from .conftest import Harness, ServerProcess
from .engines import ADMIN_KEY, engines


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent: str
    kind: int
    service: str
    role: str
    attributes: dict[str, Any]


@dataclass
class Receiver:
    """An OTLP/HTTP traces endpoint: every POST to /v1/traces decoded into ``spans``."""

    port: int = 0
    posts: int = 0
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            self.posts += 1
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        self.spans.append(
                            Span(
                                s.name,
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                                s.kind,
                                str(resource.get("service.name")),
                                str(resource.get("flare.role")),
                                {a.key: _value(a.value) for a in s.attributes},
                            )
                        )

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name]


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            rec.take(body)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def _tracing_env(rec: Receiver, ratio: str = "1") -> dict[str, str]:
    return {
        "FLARE_OTEL_ENDPOINT": rec.url,
        "FLARE_OTEL_SAMPLE_RATIO": ratio,
        "FLARE_OTEL_SERVICE_NAME": "flare-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def _log_records(path: Path | None) -> list[dict[str, Any]]:
    assert path is not None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _exercise(srv: ServerProcess) -> None:
    """A rule added over REST, a REST send, a WebSocket send (ack awaited)."""
    h = Harness(srv)
    try:
        await h.user("alice")
        await h.user("bob")
        await h.admin.admin_add_filter_rule("tracingword", action="mask")  # logs an INFO line in the request
        conv = direct_conv("alice", "bob")
        assert (await h.rest("alice").send(conv, "c-rest", {"text": "over REST"}))["seq"] == 1
        alice = await h.device("alice")
        assert (await alice.send(conv, "over the WebSocket", cmid="c-ws")).seq == 2
    finally:
        await h.close()


async def test_rest_and_websocket_spans_and_their_log_lines(tmp_path: Path, receiver: Receiver) -> None:
    srv = ServerProcess(tmp_path / "data", env_overrides={**_tracing_env(receiver), "FLARE_LOG_LEVEL": "INFO"})
    srv.start()
    caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    try:
        await _exercise(srv)
        async with httpx.AsyncClient() as http:  # a caller that traces: the request's span is its child
            reply = await http.get(
                f"{srv.api_url}/healthz", headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"}
            )
            assert reply.status_code == 200
    finally:
        srv.stop()  # flushes the spans still pending

    # The REST request: named by its route template, with its status; the log line it caused carries its ids.
    [rule] = receiver.named("POST /v1/admin/filter/rules")
    assert rule.attributes["http.route"] == "/v1/admin/filter/rules"
    assert rule.attributes["http.response.status_code"] == 201
    assert rule.parent == ""
    assert rule.service == "flare-test"
    assert rule.role == "serve"
    records = _log_records(srv.log_path)
    [line] = [r for r in records if r["msg"].startswith("content filter:") and "request_id" in r]
    assert (line["trace_id"], line["span_id"]) == (rule.trace_id, rule.span_id)
    assert not any("trace_id" in r for r in records if "request_id" not in r)  # outside requests: no span

    # A REST send: the request span with the send path's children.
    [rest_send] = receiver.named("POST /v1/conversations/{conv}/messages")
    assert rest_send.attributes["http.response.status_code"] == 200
    children = {s.name: s for s in receiver.spans if s.parent == rest_send.span_id}
    assert set(children) == {"flare.send.append", "flare.send.fanout"}
    assert all(c.trace_id == rest_send.trace_id for c in children.values())

    # The WebSocket send: its own trace, with append (the seq) and fan-out as children.
    [ws_send] = receiver.named("flare.ws.send")
    assert ws_send.parent == ""
    assert ws_send.kind == 2
    assert ws_send.attributes["flare.conv"] == "d:alice:bob"
    assert ws_send.attributes["flare.user"] == "alice"
    ws_children = {s.name: s for s in receiver.spans if s.parent == ws_send.span_id}
    assert set(ws_children) == {"flare.send.append", "flare.send.fanout"}
    assert ws_children["flare.send.append"].attributes["flare.seq"] == 2  # the REST send was 1
    assert ws_children["flare.send.fanout"].attributes["flare.recipients"] == 2
    assert len({ws_send.trace_id, rest_send.trace_id, rule.trace_id}) == 3

    # A caller's sampled traceparent: the request span joins the caller's trace.
    [health] = [s for s in receiver.named("GET /healthz") if s.trace_id == caller_trace]
    assert health.parent == caller_span


async def test_tracing_off_or_ratio_zero_exports_nothing(tmp_path: Path, receiver: Receiver) -> None:
    # Off: the standard OTLP variables point at the receiver, but without otel_endpoint nothing is traced.
    off = ServerProcess(
        tmp_path / "off",
        env_overrides={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "FLARE_LOG_LEVEL": "INFO"},
    )
    off.start()
    try:
        await _exercise(off)
    finally:
        off.stop()
    assert receiver.posts == 0
    assert not any("trace_id" in r for r in _log_records(off.log_path))

    # Ratio 0: nothing of our own is sampled...
    zero = ServerProcess(tmp_path / "zero", env_overrides=_tracing_env(receiver, "0"))
    zero.start()
    trace_id = uuid.uuid4().hex
    try:
        await _exercise(zero)
        await asyncio.sleep(0.5)  # past the export delay (100 ms)
        assert receiver.posts == 0
        assert receiver.spans == []
        # ...but a caller's sampled trace is followed (parent-based): the receiver does get that one.
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"{zero.api_url}/healthz", headers={"traceparent": f"00-{trace_id}-{'1' * 16}-01"})
            assert reply.status_code == 200
    finally:
        zero.stop()
    assert [s.name for s in receiver.spans] == ["GET /healthz"]
    assert receiver.spans[0].trace_id == trace_id


# ------------------------------------------------------------------------ across processes, through Kafka


@pytest.fixture
async def traced_cluster(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Cluster]:
    """One gateway node and a `flare worker store` on Kafka, Redis, PostgreSQL and ClickHouse, both tracing."""
    settings = {
        "FLARE_MESSAGES_PARTITIONS": "2",
        "FLARE_JWT_SECRET": "tracing-cluster-secret-0123456789abcdef",
        "FLARE_ADMIN_KEY": "tracing-cluster-admin-key",
        **_tracing_env(receiver),
    }
    async with engines("tracing", settings) as e:
        c = Cluster(tmp_path, e.env)
        try:
            await asyncio.to_thread(c.migrate)
            c.node_ports = [(free_port(), free_port())]
            c.api_port, c.ws_port = c.node_ports[0]
            await asyncio.to_thread(c.start_worker)
            await asyncio.to_thread(c.start_node, 0)
            yield c
        finally:
            c.stop()


async def test_a_message_trace_runs_from_gateway_through_kafka_to_the_store_worker(
    traced_cluster: Cluster, receiver: Receiver
) -> None:
    c = traced_cluster
    admin = RestClient(c.api_url, admin_key=c.env["FLARE_ADMIN_KEY"])
    try:
        for uid in ("alice", "bob"):
            await admin.admin_create_user(uid)
        token = await admin.admin_issue_token("alice")
    finally:
        await admin.aclose()
    alice = FlareClient(c.ws_url, token, "d1")
    await alice.connect()
    try:
        acks = [await alice.send(direct_conv("alice", "bob"), f"traced {i}", cmid=f"t-{i}") for i in range(3)]
    finally:
        await alice.close()
    # The worker writes the batch, then ends the records' spans; they reach the receiver within its delay.
    for _ in range(200):
        if len(receiver.named("flare.store.write")) >= 3:
            break
        await asyncio.sleep(0.1)
    c.stop()  # both processes flush what they hold

    sends = receiver.named("flare.ws.send")
    assert len(sends) == 3
    assert {s.role for s in sends} == {"serve"}
    appends = {s.parent: s for s in receiver.named("flare.send.append")}
    writes = receiver.named("flare.store.write")
    assert len(writes) == 3, [s.name for s in receiver.spans]
    seqs = sorted(a.seq for a in acks)
    by_seq = {appends[s.span_id].attributes["flare.seq"]: (s, appends[s.span_id]) for s in sends}
    assert sorted(by_seq) == seqs
    for send, append in by_seq.values():
        # gateway process: flare.ws.send -> flare.send.append; store worker process: -> flare.store.write
        [write] = [w for w in writes if w.parent == append.span_id]
        assert write.trace_id == append.trace_id == send.trace_id
        assert write.role == "worker:store"
        assert write.kind == 5
        assert write.attributes["messaging.destination.name"] == c.env["FLARE_MESSAGES_TOPIC"]
        assert write.attributes["messaging.kafka.message.key"] == "d:alice:bob"


class Answering(FakeProvider):
    """An HTTP receiver (a push gateway, a webhook endpoint) that takes every POST: its requests' headers are
    what the test looks at."""

    async def handle(self, request: Request) -> Response:
        return Response(200, b"", {"x-request-id": f"r{len(self.requests)}"})


async def test_a_message_trace_runs_on_into_the_push_and_webhook_workers(tmp_path: Path, receiver: Receiver) -> None:
    gateway, endpoint = Answering(), Answering()
    async with running(gateway) as push_url, running(endpoint) as endpoint_url:
        settings = {
            "FLARE_PUSH_WEBHOOK_URL": f"{push_url}/push",
            "FLARE_PUSH_WEBHOOK_SECRET": "tracing-push-secret",
            "FLARE_PUSH_PARTITIONS": "2",
            "FLARE_WEBHOOK_PARTITIONS": "2",
            "FLARE_MESSAGES_PARTITIONS": "2",
            **_tracing_env(receiver),
        }
        async with engines("tracing_workers", settings) as e:
            c = Cluster(tmp_path, e.env)
            workers = [
                Proc(role, c.flare("worker", role), e.env, tmp_path / f"{role}.log") for role in ("push", "webhooks")
            ]
            try:
                await asyncio.to_thread(c.migrate)
                c.node_ports = [(free_port(), free_port())]
                c.api_port, c.ws_port = c.node_ports[0]
                await asyncio.to_thread(c.start_worker)
                await asyncio.to_thread(c.start_node, 0)
                await _traced_send_to_an_offline_user(c, f"{endpoint_url}/hook", workers)
                for _ in range(300):  # both requests made, then their spans ended and exported
                    requests = gateway.accepted and endpoint.accepted
                    if requests and receiver.named("flare.webhook.deliver") and receiver.named("flare.push.deliver"):
                        break
                    await asyncio.sleep(0.1)
            finally:
                for w in workers:
                    await asyncio.to_thread(w.stop)  # flushes what each holds
                c.stop()
            logs = {w.name: w.log_path.read_text() for w in workers}
    assert all("Traceback" not in text for text in logs.values()), logs

    # The gateway's send: flare.ws.send -> flare.send.fanout, under which both after-send records were published.
    [send] = receiver.named("flare.ws.send")
    [fanout] = [s for s in receiver.named("flare.send.fanout") if s.parent == send.span_id]

    # `flare worker push`: the event's consumer span is the fan-out's child (across Kafka), the provider
    # request its child.
    [push_event] = receiver.named("flare.push.event")
    assert (push_event.trace_id, push_event.parent) == (send.trace_id, fanout.span_id)
    assert push_event.role == "worker:push"
    assert push_event.kind == 5  # consumer
    assert push_event.attributes["messaging.destination.name"] == c.env["FLARE_PUSH_TOPIC"]
    assert push_event.attributes["messaging.kafka.message.key"] == "d:alice:bob"
    assert push_event.attributes["flare.push.sends"] == 1
    [push] = receiver.named("flare.push.deliver")
    assert (push.trace_id, push.parent, push.role) == (send.trace_id, push_event.span_id, "worker:push")
    assert push.kind == 3  # client
    assert push.attributes["flare.push.provider"] == "webhook"
    assert push.attributes["flare.push.outcome"] == "sent"
    [pushed] = gateway.accepted
    assert pushed.json()["token"] == "bob-token-0123456789"
    assert "traceparent" not in pushed.headers  # a push provider is not told

    # `flare worker webhooks`: the same, and the endpoint's request names the delivery's span.
    [hook_event] = receiver.named("flare.webhook.event")
    assert (hook_event.trace_id, hook_event.parent) == (send.trace_id, fanout.span_id)
    assert hook_event.role == "worker:webhooks"
    assert hook_event.kind == 5
    assert hook_event.attributes["messaging.destination.name"] == c.env["FLARE_WEBHOOK_TOPIC"]
    assert hook_event.attributes["flare.webhook.event"] == "after_send"
    [hook] = receiver.named("flare.webhook.deliver")
    assert (hook.trace_id, hook.parent, hook.role) == (send.trace_id, hook_event.span_id, "worker:webhooks")
    assert hook.kind == 3
    assert hook.attributes["http.response.status_code"] == 200
    assert hook.attributes["flare.webhook.state"] == "delivered"
    [hooked] = endpoint.accepted
    assert hooked.json()["type"] == "after_send"
    version, trace_id, parent_id, flags = hooked.headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", send.trace_id, hook.span_id)
    assert int(flags, 16) & 1  # sampled
    assert hook.attributes["flare.webhook.endpoint"] == hooked.headers["flare-delivery"].split("|")[0]


async def _traced_send_to_an_offline_user(c: Cluster, hook_url: str, workers: list[Proc]) -> None:
    """bob has a push registration and no connection; an endpoint takes after_send; then the workers start (they
    read the endpoints as they start) and alice sends bob one message over the WebSocket."""
    async with RestClient(c.api_url, admin_key=ADMIN_KEY) as admin:
        for uid in ("alice", "bob"):
            await admin.admin_create_user(uid)
        async with RestClient(c.api_url, token=await admin.admin_issue_token("bob")) as bob:
            await bob.register_push("phone", "webhook", "bob-token-0123456789")
        await admin.request("POST", "/v1/admin/webhooks", json={"url": hook_url, "events": ["after_send"]}, admin=True)
        token = await admin.admin_issue_token("alice")
    for w in workers:
        await asyncio.to_thread(w.start, "flare worker ready")
    alice = FlareClient(c.ws_url, token, "d1")
    await alice.connect()
    try:
        assert (await alice.send(direct_conv("alice", "bob"), "traced to the workers", cmid="w-1")).seq == 1
    finally:
        await alice.close()
