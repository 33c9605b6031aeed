"""/metrics, /healthz and /readyz of a real `flare serve`: the counters match what the clients did."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flare_im.devcluster import free_port

from .conftest import Harness, ServerProcess, raw_authed, raw_connect

DM = "d:alice:bob"
STAGES = ("decode", "route", "durable", "fanout", "ack")


class Scrape:
    """One /metrics answer, parsed: ``value(name, **labels)`` of a sample."""

    def __init__(self, text: str) -> None:
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        found = [
            s.value for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def get(self, name: str, **labels: str) -> float:
        try:
            return self.value(name, **labels)
        except AssertionError:
            return 0.0


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


@pytest.fixture
def metrics_server(tmp_path: Path) -> Iterator[ServerProcess]:
    # A burst of 20 frames, then 1 per second: the flooder below is closed, alice's six frames are not.
    srv = ServerProcess(
        tmp_path / "data",
        env_overrides={
            "FLARE_METRICS_PORT": str(free_port()),
            "FLARE_RATE_LIMIT_PER_S": "1",
            "FLARE_RATE_LIMIT_BURST": "20",
        },
    )
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


async def test_counters_and_histograms_match_what_was_sent(metrics_server: ServerProcess) -> None:
    srv = metrics_server
    harness = Harness(srv)
    try:
        before = await scrape(srv.api_url)
        await harness.user("alice")
        await harness.user("bob")
        await harness.user("flood")
        alice = await harness.device("alice")
        bob = await harness.device("bob")
        for i in range(5):
            await alice.send(DM, f"hello {i}")
        for _ in range(5):
            await bob.next_message()

        bad = await raw_connect(srv.ws_url)  # a wrong token: error 401, close 4001
        bad.send_text(json.dumps({"type": "auth", "id": 1, "token": "not-a-token", "device": "x"}))
        assert (await bad.recv_json())["code"] == 401
        assert await bad.wait_closed() == 4001

        flood = await raw_authed(srv, harness.tokens["flood"])  # 20 pings pass, then 50 errors 429, then 4029
        for i in range(100):
            flood.send_text(json.dumps({"type": "ping", "id": i + 2}))
        assert await flood.wait_closed() == 4029

        # the loop-lag watcher records its first sample a quarter second after the start: a quick run waits for it
        after = await _settled(
            srv.api_url,
            lambda s: (
                s.get("flare_ws_connections") == 2
                and s.get("flare_event_loop_lag_seconds_count") > 0
                and s.get("flare_search_indexed_total") == 5
            ),
        )
    finally:
        await harness.close()

    assert after.value("flare_ws_auth_total", result="ok") == 3
    assert after.value("flare_ws_auth_total", result="failed") == 1
    assert after.value("flare_ws_frames_in_total", type="auth") == 4
    assert after.value("flare_ws_frames_in_total", type="send") == 5
    assert after.value("flare_ws_frames_out_total", type="ack") == 5
    assert after.value("flare_ws_deliveries_total", type="msg") == 5  # bob's device; alice got acks
    assert after.value("flare_ws_errors_total", code="401") == 1
    assert after.value("flare_ws_errors_total", code="429") == 50
    assert after.value("flare_ws_closes_total", code="4001", reason="auth_failed") == 1
    assert after.value("flare_ws_closes_total", code="4029", reason="rate_limited") == 1
    assert after.value("flare_ws_connections_opened_total") == 4
    pings = after.value("flare_ws_frames_in_total", type="ping")
    assert 19 <= pings < 25  # the burst less the auth frame, and what refilled meanwhile (1/s)
    assert after.value("flare_ws_frames_out_total", type="pong") == pings
    for stage in STAGES:
        # decode and ack time every send; the inner stages sample one in four: the 1st and the 5th.
        sampled = 5 if stage in ("decode", "ack") else 2
        assert before.value("flare_send_stage_seconds_count", stage=stage) == 0
        assert after.value("flare_send_stage_seconds_count", stage=stage) == sampled, stage
        assert after.value("flare_send_stage_seconds_bucket", stage=stage, le="+Inf") == sampled
        assert after.value("flare_send_stage_seconds_sum", stage=stage) > 0
    # Each part is within the whole: a send's stages take less than its arrival-to-ack.
    whole = after.value("flare_send_stage_seconds_sum", stage="ack")
    assert sum(after.value("flare_send_stage_seconds_sum", stage=s) for s in ("decode", "route", "durable")) < whole
    # Five messages and their read marks went through the group commit (plus the users created).
    commits = after.value("flare_sqlite_commit_seconds_count", db="flare.db")
    assert commits >= 1
    assert after.value("flare_sqlite_batch_size_sum", db="flare.db") >= 5
    assert after.value("flare_sqlite_batch_size_count", db="flare.db") == commits
    # The search follower indexed the five messages and has nothing left behind.
    assert before.value("flare_search_indexed_total") == 0
    assert after.value("flare_search_indexed_total") == 5
    assert after.value("flare_search_pending") == 0
    assert after.value("flare_search_lag_seconds") == 0
    assert after.value("flare_build_info", role="serve:api,gateway") == 1
    assert after.value("flare_ready") == 1
    assert after.value("flare_event_loop_lag_seconds_count") > 0
    assert after.value("process_resident_memory_bytes") > 0
    # REST calls (user creation, token issue) counted by status; the scrapes themselves too.
    http = {s.labels["status"]: s.value for s in after.samples if s.name == "flare_http_requests_total"}
    assert http.get("201", 0) + http.get("200", 0) >= 6, http


async def _settled(url: str, done: object, timeout: float = 10.0) -> Scrape:
    """Scrapes until ``done(scrape)``: a close reaches the counters when the socket is gone, not before."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await scrape(url)
        if done(got) or asyncio.get_running_loop().time() > deadline:  # type: ignore[operator]
            return got
        await asyncio.sleep(0.1)


async def test_metrics_port_health_and_readiness(metrics_server: ServerProcess) -> None:
    srv = metrics_server
    port = int(srv.env_overrides["FLARE_METRICS_PORT"])
    own = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:
        for base in (srv.api_url, own):
            health = await http.get(f"{base}/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            ready = await http.get(f"{base}/readyz")
            assert ready.status_code == 200
            answer = ready.json()
            assert (answer["status"], answer["draining"], answer["checks"]["sqlite:flare.db"]) == ("ready", False, "ok")
            assert set(answer["checks"].values()) == {"ok"}  # every SQLite file the node opened
        metrics = await http.get(f"{own}/metrics")
        assert metrics.status_code == 200
        assert "flare_ws_connections " in metrics.text
        assert (await http.get(f"{own}/other")).status_code == 404
        assert (await http.post(f"{own}/metrics")).status_code == 405
        # Every REST answer names its request; a client's own id is kept when it is a plain token.
        mine = await http.get(f"{srv.api_url}/healthz", headers={"X-Request-ID": "req-42"})
        assert mine.headers["x-request-id"] == "req-42"
        odd = await http.get(f"{srv.api_url}/healthz", headers={"X-Request-ID": "a b\tc" * 30})
        assert odd.headers["x-request-id"] != "a b\tc" * 30
        assert len(odd.headers["x-request-id"]) == 16
    # The listener of its own shrugs off a client that sends garbage or nothing.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x00\x01garbage without an end")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_a_draining_node_is_not_ready(tmp_path: Path) -> None:
    """After SIGTERM, while a REST request is still under way, /readyz answers 503 "draining"."""
    port = free_port()
    srv = ServerProcess(
        tmp_path / "data", env_overrides={"FLARE_METRICS_PORT": str(port), "FLARE_SHUTDOWN_GRACE_S": "3"}
    )
    srv.start()
    assert srv.proc is not None
    # A request whose body is still coming: the API waits for it (up to the grace) before the node closes.
    _, slow = await asyncio.open_connection("127.0.0.1", srv.api_port)
    slow.write(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n{"
    )
    await slow.drain()
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        srv.proc.send_signal(signal.SIGTERM)
        seen: list[int] = []
        for _ in range(100):
            try:
                answer = await http.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            except httpx.HTTPError:
                break
            seen.append(answer.status_code)
            if answer.status_code == 503:
                assert answer.json()["draining"] is True
                assert answer.json()["status"] == "not ready"
                break
            await asyncio.sleep(0.02)
    slow.close()
    assert srv.stop() == 0  # the process was already stopping; this waits for it and checks its log
    assert 503 in seen, seen
