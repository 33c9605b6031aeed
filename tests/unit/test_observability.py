"""Log formatting and redaction, the cheap counters and their Prometheus form, readiness, the request-id middleware."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from prometheus_client.parser import text_string_to_metric_families

from flare_im.api.http import current_user
from flare_im.observability.endpoints import HttpStats, RequestContext, start_metrics_server
from flare_im.observability.health import CheckFailed, Health, host_ports, url_checks
from flare_im.observability.logs import JsonFormatter, ShutdownCancelsAsWarnings, bind, log_ids, redact, unbind
from flare_im.observability.metrics import FlareCollector, exposition, new_registry
from flare_im.observability.sources import gateway_source, send_source
from flare_im.observability.stats import Counts, GatewayStats, Histogram, SendStages
from flare_im.protocol.frames import Ack, Msg, Send


def _record(msg: str, *args: Any, level: int = logging.INFO, exc: bool = False, **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError('a "quoted"\nmulti-line error')
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    record = logging.LogRecord("flare.test", level, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_every_record_is_one_line_of_json_whatever_it_holds() -> None:
    formatter = JsonFormatter()
    line = formatter.format(_record('quote " backslash \\ newline\n tab\t unicode ✓ %s', "arg}{", exc=True))
    assert "\n" not in line
    assert line.startswith('{"ts":"')  # compact separators: one form for greps ('"level":"ERROR"')
    out = json.loads(line)
    assert out["msg"] == 'quote " backslash \\ newline\n tab\t unicode ✓ arg}{'
    assert out["level"] == "INFO"
    assert out["logger"] == "flare.test"
    assert out["ts"].endswith("Z")
    assert out["exc"].startswith("Traceback (most recent call last)")
    assert 'ValueError: a "quoted"\nmulti-line error' in out["exc"]
    # A library's broken format call still makes a valid line.
    assert json.loads(formatter.format(_record("%d items", "not a number")))["msg"].startswith("'%d items'")


def test_ids_come_from_extra_and_from_the_bound_context() -> None:
    formatter = JsonFormatter()
    token = bind(request_id="r1", user="alice")
    try:
        out = json.loads(formatter.format(_record("x", **log_ids(device="phone", conv="d:a:b"))))
    finally:
        unbind(token)
    assert (out["request_id"], out["user"], out["device"], out["conv"]) == ("r1", "alice", "phone", "d:a:b")
    assert "request_id" not in json.loads(formatter.format(_record("after the request")))
    assert log_ids("u", "", "") == {"user": "u"}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl rejected", "eyJhbGciOiJIUzI1NiJ9"),
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("GET /v1/ws?token=hunter2hunter2&x=1", "hunter2hunter2"),
        ('{"password": "correct horse"}', "correct"),
        ("admin_key=0123456789", "0123456789"),
    ],
)
def test_token_shaped_text_is_redacted(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "[redacted]" in redact(text)
    assert secret not in json.loads(JsonFormatter().format(_record("%s", text)))["msg"]


def test_ordinary_text_is_left_alone() -> None:
    text = "send of alice/phone failed: 3 events, conv d:alice:bob seq 12"
    assert redact(text) == text


def test_shutdown_cancellations_are_warnings_and_other_errors_stay_errors() -> None:
    demote = ShutdownCancelsAsWarnings()
    try:
        raise asyncio.CancelledError("Task cancelled, timeout graceful shutdown exceeded")
    except asyncio.CancelledError:
        import sys

        cancelled = logging.LogRecord(
            "uvicorn.error", logging.ERROR, "", 1, "Exception in ASGI application\n", (), None
        )
        cancelled.exc_info = sys.exc_info()
    assert demote.filter(cancelled)
    assert (cancelled.levelname, cancelled.exc_info) == ("WARNING", None)
    assert "request cancelled at shutdown" in cancelled.getMessage()
    grace = logging.LogRecord(
        "uvicorn.error",
        logging.ERROR,
        "",
        1,
        "Cancel %s running task(s), timeout graceful shutdown exceeded",
        (1,),
        None,
    )
    assert demote.filter(grace)
    assert grace.levelname == "WARNING"
    real = _record("Exception in ASGI application", level=logging.ERROR, exc=True)
    assert demote.filter(real)
    assert real.levelname == "ERROR"
    assert real.exc_info is not None


def test_histogram_buckets_are_cumulative_with_le_inclusive() -> None:
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(value)
    assert h.cumulative() == [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)]
    assert (h.count, round(h.sum, 6)) == (5, 8.65)


def _scrape(collector: FlareCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(new_registry(collector)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_collector_reads_the_counters_at_scrape_time() -> None:
    stats, stages, delivered = GatewayStats(), SendStages(), Counts()
    collector = FlareCollector("serve:test", [gateway_source(stats, lambda: 7, delivered), send_source(stages)])
    stats.connections_opened += 3
    stats.connections_closed += 1
    stats.frames_in.add(Send, 2)
    stats.frames_out.add(Ack, 2)
    delivered.add(Msg, 5)
    stats.closes.add(4008)
    stats.closes.add(4999)
    stages.durable.observe(0.002)
    got = _scrape(collector)
    assert got[("flare_ws_connections", ())] == 2
    assert got[("flare_ws_authenticated_connections", ())] == 7
    assert got[("flare_ws_frames_in_total", (("type", "send"),))] == 2
    assert got[("flare_ws_frames_out_total", (("type", "ack"),))] == 2
    assert got[("flare_ws_frames_out_total", (("type", "msg"),))] == 5  # fan-out frames are frames out too
    assert got[("flare_ws_deliveries_total", (("type", "msg"),))] == 5
    assert got[("flare_ws_closes_total", (("code", "4008"), ("reason", "slow_consumer")))] == 1
    assert got[("flare_ws_closes_total", (("code", "4999"), ("reason", "other")))] == 1
    assert got[("flare_send_stage_seconds_count", (("stage", "durable"),))] == 1
    assert got[("flare_send_stage_seconds_bucket", (("le", "0.0025"), ("stage", "durable")))] == 1
    assert got[("flare_send_stage_seconds_bucket", (("le", "0.001"), ("stage", "durable")))] == 0
    assert got[("flare_build_info", (("role", "serve:test"), ("version", "0.1.0")))] == 1
    stats.frames_in.add(Send)  # read again at the next scrape
    assert _scrape(collector)[("flare_ws_frames_in_total", (("type", "send"),))] == 3


def test_backend_addresses_come_from_urls_without_credentials() -> None:
    assert host_ports("postgresql://u:p%40ss@db.example:6543/flare", 5432) == [("db.example", 6543)]
    assert host_ports("kafka://k1:9092,k2,[::1]:9093", 9092) == [("k1", 9092), ("k2", 9092), ("::1", 9093)]
    assert host_ports("redis://redis/0", 6379) == [("redis", 6379)]
    assert set(url_checks(database_url="sqlite:///x.db", cache_url="redis://r:1/0", queue_url="kafka://k:1")) == {
        "redis",
        "kafka",
    }


async def test_readiness_names_the_failing_check_and_draining() -> None:
    async def ok() -> None:
        return None

    async def refused() -> None:
        raise ConnectionRefusedError("connect to postgresql://user:password@db:5432 failed")

    async def odd() -> None:
        raise CheckFailed("unexpected reply")

    draining = False
    health = Health({"sqlite": ok, "postgresql": refused, "redis": odd}, draining=lambda: draining)
    ready, answer = await health.ready()
    assert not ready
    assert answer["checks"] == {
        "sqlite": "ok",
        "postgresql": "ConnectionRefusedError",
        "redis": "CheckFailed: unexpected reply",
    }
    assert "password" not in json.dumps(answer)
    healthy = Health({"sqlite": ok}, draining=lambda: draining)
    assert (await healthy.ready())[0]
    draining = True
    ready, answer = await healthy.ready()  # draining is never served from the cache
    assert (ready, answer["status"], answer["draining"]) == (False, "not ready", True)


async def test_request_ids_reach_the_log_lines_and_the_response() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("flare.test.request")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        logger.info("handling")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    stats = HttpStats()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    try:
        scope = {"type": "http", "headers": [(b"x-request-id", b"abc-123")]}
        await RequestContext(app, stats)(scope, receive, send)
        await RequestContext(app, stats)({"type": "http", "headers": [(b"x-request-id", b"bad id\n")]}, receive, send)
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["request_id"] == "abc-123"
    assert second["request_id"] != "bad id\n"
    assert len(second["request_id"]) == 16
    assert (b"x-request-id", b"abc-123") in sent[0]["headers"]
    assert dict(stats.statuses.items()) == {204: 2}
    assert stats.seconds.count == 2


async def test_the_metrics_listener_answers_and_survives_bad_requests() -> None:
    health = Health()
    server = await start_metrics_server("127.0.0.1", 0, new_registry(FlareCollector("worker:test")), health)
    port = server.sockets[0].getsockname()[1]

    async def ask(raw: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        writer.write_eof()  # a request that ends before its head does is not waited for
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return answer

    try:
        metrics = await ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert metrics.startswith(b"HTTP/1.1 200 OK")
        assert b'flare_build_info{role="worker:test"' in metrics
        assert (await ask(b"GET /readyz HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
        assert (await ask(b"HEAD /healthz HTTP/1.1\r\n\r\n")).endswith(b"\r\n\r\n")
        assert (await ask(b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await ask(b"DELETE /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert await ask(b"x" * 10_000) == b""  # a head over the limit: closed without an answer
        assert await ask(b"GET /metrics") == b""  # ends before the head does
    finally:
        server.close()
        await server.wait_closed()


async def test_rest_lines_name_the_authenticated_user() -> None:
    """api/http.py's current_user puts the user on the request's log lines; the next request starts clean."""

    class Auth:
        async def authenticate(self, token: str) -> str:
            return {"t-alice": "alice"}[token]

    app = FastAPI()
    app.state.ctx = SimpleNamespace(auth=Auth())
    logger = logging.getLogger("flare.test.rest")

    @app.get("/me")
    async def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        logger.info("reading a profile")
        return {"user": user}

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        logger.info("anonymous")
        return {}

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    transport = httpx.ASGITransport(app=RequestContext(app, HttpStats()))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/me", headers={"Authorization": "Bearer t-alice"})).json() == {"user": "alice"}
            assert (await http.get("/open")).status_code == 200
    finally:
        logger.removeHandler(handler)
    mine, anonymous = (json.loads(line) for line in stream.getvalue().splitlines())
    assert mine["user"] == "alice"
    assert "request_id" in mine
    assert "user" not in anonymous
    assert "t-alice" not in stream.getvalue()
