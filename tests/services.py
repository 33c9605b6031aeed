"""Where the real engines of the distributed tests are, and a guard for tests that need one.

``scripts/services.sh start`` starts them on the defaults below (``scripts/services.sh env`` prints the same
URLs as FLARE_TEST_* exports). ``require(name)`` makes a test that needs an engine FAIL under CI=true when the
engine does not answer, so CI can never go green by skipping, and SKIP elsewhere with the command to run.
"""

from __future__ import annotations

import http.client
import os
import socket
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

START_HINT = "run scripts/services.sh start"
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class _Service:
    variable: str
    default: str
    default_port: int | None  # None: the URL is a path to an executable, not a server


SERVICES: dict[str, _Service] = {
    "redis": _Service("FLARE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15", 6379),
    "postgres": _Service("FLARE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/flare_test", 5432),
    "kafka": _Service("FLARE_TEST_KAFKA_URL", "kafka://127.0.0.1:19092", 9092),
    "clickhouse": _Service("FLARE_TEST_CLICKHOUSE_URL", "clickhouse://127.0.0.1:18123/default", 8123),
    "s3": _Service("FLARE_TEST_S3_URL", "http://127.0.0.1:14568", 80),  # s3rver (keys S3RVER/S3RVER)
    "haproxy": _Service("FLARE_TEST_HAPROXY", "/usr/sbin/haproxy", None),
    "chromium": _Service("FLARE_TEST_CHROMIUM", "/usr/bin/chromium", None),  # driven by Playwright (browser tests)
    "prometheus": _Service("FLARE_TEST_PROMETHEUS", "/usr/bin/prometheus", None),  # promtool is beside it
}


def service_url(name: str) -> str:
    """The URL of engine ``name`` (its FLARE_TEST_* variable if set and not empty, else the default)."""
    service = _service(name)
    return os.environ.get(service.variable) or service.default


TRUTHY = frozenset({"1", "true", "yes", "on"})


def in_ci() -> bool:
    """CI mode: ``CI`` set to any usual truthy value (true, 1, yes, on; any case). In CI a missing engine fails."""
    return os.environ.get("CI", "").strip().lower() in TRUTHY


def fail_or_skip(reason: str) -> NoReturn:
    """Fails the test in CI, where a missing engine must never pass as a skip; skips it elsewhere."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require(name: str) -> str:
    """Returns ``service_url(name)`` if the engine answers; else fails the test (CI=true) or skips it."""
    url = service_url(name)
    problem = _probe(name, url)
    if problem is not None:
        fail_or_skip(f"{name} is not available at {url} ({problem}): {START_HINT}")
    return url


def _service(name: str) -> _Service:
    try:
        return SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}; known: {', '.join(SERVICES)}") from None


def _probe(name: str, url: str) -> str | None:
    """None if the engine answers, else why not."""
    default_port = _service(name).default_port
    if default_port is None:
        return None if os.path.isfile(url) and os.access(url, os.X_OK) else "no executable file there"
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    if name == "clickhouse":
        return _clickhouse_ping(host, port)
    return _tcp_connect(host, port)


def _tcp_connect(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"TCP connect failed: {exc}"


def _clickhouse_ping(host: str, port: int) -> str | None:
    # http.client, not urllib: an http_proxy variable in the environment must not reroute a loopback probe.
    connection = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT_S)
    try:
        connection.request("GET", "/ping")
        response = connection.getresponse()
        body = response.read(64)
    except (OSError, http.client.HTTPException) as exc:
        return f"HTTP /ping failed: {exc}"
    finally:
        connection.close()
    if response.status != 200 or not body.startswith(b"Ok."):
        return f"HTTP /ping answered {response.status} {body!r}, not Ok."
    return None
