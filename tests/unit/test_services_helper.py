"""tests/services.py: URLs from FLARE_TEST_* with defaults, and require() failing under CI=true, skipping otherwise.

These tests point the helper at servers they run themselves (or at ports nothing listens on), so they do not
depend on scripts/services.sh having started anything.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.services import SERVICES, require, service_url

DEFAULTS = {
    "redis": "redis://127.0.0.1:6379/15",
    "postgres": "postgresql://postgres@127.0.0.1:5432/flare_test",
    "kafka": "kafka://127.0.0.1:19092",
    "clickhouse": "clickhouse://127.0.0.1:18123/default",
    "haproxy": "/usr/sbin/haproxy",
    "chromium": "/usr/bin/chromium",
    "prometheus": "/usr/bin/prometheus",
    "s3": "http://127.0.0.1:14568",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    for service in SERVICES.values():
        monkeypatch.delenv(service.variable, raising=False)


def closed_port() -> int:
    """A loopback port that was free a moment ago, so a connect to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def http_server(ping_body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/ping" else 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(ping_body)))
            self.end_headers()
            self.wfile.write(ping_body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def ping_server(request: pytest.FixtureRequest) -> Iterator[int]:
    server = http_server(request.param)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_defaults_match_what_services_sh_starts() -> None:
    assert {name: service_url(name) for name in SERVICES} == DEFAULTS


def test_environment_overrides_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLARE_TEST_REDIS_URL", "redis://127.0.0.1:7000/3")
    monkeypatch.setenv("FLARE_TEST_KAFKA_URL", "")  # empty counts as unset
    assert service_url("redis") == "redis://127.0.0.1:7000/3"
    assert service_url("kafka") == DEFAULTS["kafka"]


def test_unknown_service_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown service 'mysql'"):
        service_url("mysql")


@pytest.mark.parametrize("name", ["redis", "postgres", "kafka"])
def test_require_fails_under_ci_when_port_is_closed(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    port = closed_port()
    monkeypatch.setenv(SERVICES[name].variable, f"{name}://127.0.0.1:{port}/x")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(
        pytest.fail.Exception, match=rf"{name} is not available at .*:{port}.*scripts/services.sh start"
    ):
        require(name)


@pytest.mark.parametrize("ci", ["1", "TRUE", "yes", "on"])
def test_require_fails_under_any_truthy_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("FLARE_TEST_REDIS_URL", f"redis://127.0.0.1:{closed_port()}/15")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"scripts/services.sh start"):
        require("redis")


@pytest.mark.parametrize("ci", [None, "", "false", "0", "no"])
def test_require_skips_outside_ci_when_port_is_closed(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    monkeypatch.setenv("FLARE_TEST_REDIS_URL", f"redis://127.0.0.1:{closed_port()}/15")
    if ci is not None:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"scripts/services.sh start"):
        require("redis")


def test_require_returns_url_when_port_answers(monkeypatch: pytest.MonkeyPatch, listening_port: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{listening_port}/flare_test"
    monkeypatch.setenv("FLARE_TEST_POSTGRES_URL", url)
    monkeypatch.setenv("CI", "true")
    assert require("postgres") == url


@pytest.mark.parametrize("ping_server", [b"Ok.\n"], indirect=True)
def test_require_clickhouse_accepts_ok_ping(monkeypatch: pytest.MonkeyPatch, ping_server: int) -> None:
    url = f"clickhouse://127.0.0.1:{ping_server}/default"
    monkeypatch.setenv("FLARE_TEST_CLICKHOUSE_URL", url)
    monkeypatch.setenv("CI", "true")
    assert require("clickhouse") == url


@pytest.mark.parametrize("ping_server", [b"not clickhouse"], indirect=True)
def test_require_clickhouse_rejects_other_http_server(monkeypatch: pytest.MonkeyPatch, ping_server: int) -> None:
    monkeypatch.setenv("FLARE_TEST_CLICKHOUSE_URL", f"clickhouse://127.0.0.1:{ping_server}/default")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"answered 200 b'not clickhouse', not Ok\."):
        require("clickhouse")


def test_require_clickhouse_fails_when_port_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLARE_TEST_CLICKHOUSE_URL", f"clickhouse://127.0.0.1:{closed_port()}/default")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"HTTP /ping failed"):
        require("clickhouse")


def test_require_haproxy_checks_for_an_executable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("FLARE_TEST_HAPROXY", sys.executable)
    assert require("haproxy") == sys.executable
    not_executable = tmp_path / "haproxy"
    not_executable.write_text("")
    monkeypatch.setenv("FLARE_TEST_HAPROXY", str(not_executable))
    with pytest.raises(pytest.fail.Exception, match="no executable file there"):
        require("haproxy")
