"""Security headers on every API reply, and CORS only for the origins an operator lists (api/headers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import ServerProcess

APP = "https://app.example.com"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("headers")) / "data")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def cors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        Path(tmp_path_factory.mktemp("cors")) / "data", env_overrides={"FLARE_CORS_ORIGINS": f"{APP}, http://x.test"}
    )
    srv.start()
    yield srv
    srv.stop()


def test_every_reply_carries_the_security_headers(plain: ServerProcess) -> None:
    with httpx.Client(base_url=plain.api_url) as http:
        for reply in (http.get("/healthz"), http.get("/v1/me"), http.post("/v1/auth/login", json={})):
            assert reply.headers["x-content-type-options"] == "nosniff", reply.url
            assert reply.headers["x-frame-options"] == "DENY"
            assert reply.headers["referrer-policy"] == "no-referrer"
            # JSON (which may hold tokens) is never cached and may run nothing if a browser opens it
            assert reply.headers["cache-control"] == "no-store"
            assert reply.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
            assert "strict-transport-security" not in reply.headers  # no TLS here: a proxy's business
        docs = http.get("/docs")
        assert docs.status_code == 200
        assert docs.headers["content-type"].startswith("text/html")
        assert docs.headers["x-content-type-options"] == "nosniff"
        # the page's own policy (or none), never the JSON one that would stop its scripts
        assert docs.headers.get("content-security-policy") != "default-src 'none'; frame-ancestors 'none'"


def test_no_cross_origin_access_unless_configured(plain: ServerProcess) -> None:
    with httpx.Client(base_url=plain.api_url) as http:
        reply = http.get("/healthz", headers={"Origin": APP})
        assert "access-control-allow-origin" not in reply.headers
        preflight = http.options("/v1/me", headers={"Origin": APP, "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in preflight.headers


def test_cors_for_the_listed_origins_only(cors: ServerProcess) -> None:
    with httpx.Client(base_url=cors.api_url) as http:
        ok = http.options(
            "/v1/me",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == APP
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in ok.headers  # bearer tokens, never cookies
        simple = http.get("/healthz", headers={"Origin": APP})
        assert simple.headers["access-control-allow-origin"] == APP
        assert "retry-after" in simple.headers["access-control-expose-headers"].lower()

        stranger = http.options(
            "/v1/me", headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "GET"}
        )
        assert stranger.status_code == 400
        assert "access-control-allow-origin" not in stranger.headers
        assert (
            "access-control-allow-origin" not in http.get("/healthz", headers={"Origin": "https://evil.test"}).headers
        )
        # the admin key is for servers: a browser page may not send it cross-origin
        admin = http.options(
            "/v1/admin/users",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-admin-key",
            },
        )
        assert admin.status_code == 400
