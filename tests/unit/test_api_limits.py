"""Request-body limits below FastAPI (api/limits.py) and the per-IP connection count (netlimits.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

from flare_im.api.errors import install_error_handlers
from flare_im.api.limits import BodyLimit, BodyLimits
from flare_im.netlimits import PeerConnections, peer_address

LIMITS = BodyLimits(anonymous=100, default=1000, by_prefix=(("/admin/", 5000),))


def app_with_limits() -> tuple[BodyLimit, list[int]]:
    """A bare API whose handler records the size of each body it read, behind BodyLimit; the header
    ``x-valid: 1`` stands for credentials that verify."""
    api = FastAPI()
    install_error_handlers(api)
    seen: list[int] = []

    @api.post("/echo")
    @api.post("/admin/echo")
    async def echo(request: Request) -> dict[str, int]:
        body = await request.body()
        seen.append(len(body))
        return {"size": len(body)}

    return BodyLimit(api, LIMITS, lambda headers: headers.get("x-valid") == "1"), seen


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, list[int]]]:
    app, seen = app_with_limits()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c, seen


def test_limits_by_credentials_and_path() -> None:
    assert LIMITS.of("/admin/echo", authenticated=False) == 100
    assert LIMITS.of("/echo", authenticated=True) == 1000
    assert LIMITS.of("/admin/echo", authenticated=True) == 5000


async def test_a_declared_length_over_the_limit_is_refused_unread(client: tuple[httpx.AsyncClient, list[int]]) -> None:
    c, seen = client
    reply = await c.post("/echo", content=b"x" * 101)
    assert reply.status_code == 413
    assert reply.json()["error"]["name"] == "too_large"
    assert "100 bytes" in reply.json()["error"]["message"]
    assert reply.headers["connection"] == "close"
    assert seen == []  # the handler never ran
    assert (await c.post("/echo", content=b"x" * 100)).json() == {"size": 100}


async def test_a_declared_length_over_the_limit_is_answered_before_any_read() -> None:
    # Through a client the streamed check would answer 413 too, after reading: count the reads themselves.
    app, seen = app_with_limits()
    reads = 0

    async def receive() -> dict[str, object]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 101, "more_body": False}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t"), (b"content-length", b"101")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert reads == 0
    assert sent[0]["status"] == 413
    assert seen == []


async def test_credentials_raise_the_limit(client: tuple[httpx.AsyncClient, list[int]]) -> None:
    c, seen = client
    assert (await c.post("/echo", content=b"x" * 1000, headers={"x-valid": "1"})).status_code == 200
    assert (await c.post("/echo", content=b"x" * 1001, headers={"x-valid": "1"})).status_code == 413
    assert (await c.post("/admin/echo", content=b"x" * 5000, headers={"x-valid": "1"})).status_code == 200
    assert (await c.post("/admin/echo", content=b"x" * 5000)).status_code == 413  # no credentials
    assert seen == [1000, 5000]


async def test_a_streamed_body_is_cut_off_at_the_limit(client: tuple[httpx.AsyncClient, list[int]]) -> None:
    c, seen = client
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):  # 64 KB offered in 64-byte chunks, no Content-Length
            sent += 64
            yield b"y" * 64

    reply = await c.post("/echo", content=chunks())
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == 413
    assert seen == []
    assert sent <= 64 * 3  # reading stopped at the limit, not at the end of the body


async def test_a_content_length_that_is_not_a_number_is_400(client: tuple[httpx.AsyncClient, list[int]]) -> None:
    c, seen = client
    request = c.build_request("POST", "/echo", content=b"{}")
    request.headers["content-length"] = "-5"
    reply = await c.send(request)
    assert reply.status_code == 400
    assert reply.json()["error"]["name"] == "bad_request"
    assert seen == []


def test_connections_are_counted_per_address() -> None:
    peers = PeerConnections(per_ip=2)
    assert peers.acquire("10.0.0.1")
    assert peers.acquire("10.0.0.1")
    assert not peers.acquire("10.0.0.1")  # refused, and not counted
    assert peers.open_from("10.0.0.1") == 2
    assert peers.acquire("10.0.0.2")  # another address has its own count
    peers.release("10.0.0.1")
    assert peers.acquire("10.0.0.1")
    for _ in range(3):
        peers.release("10.0.0.1")
    assert peers.open_from("10.0.0.1") == 0  # never negative
    assert peers.acquire(None)  # a Unix socket has no address to count


def test_exempt_networks_and_no_limit() -> None:
    peers = PeerConnections(per_ip=1, exempt=(ipaddress.ip_network("192.168.0.0/24"),))
    assert all(peers.acquire("192.168.0.7") for _ in range(10))
    assert peers.acquire("192.168.1.7")
    assert not peers.acquire("192.168.1.7")
    unlimited = PeerConnections(per_ip=0)
    assert all(unlimited.acquire("10.0.0.1") for _ in range(1000))


def test_peer_address_of_sockets() -> None:
    assert peer_address(("127.0.0.1", 5000)) == "127.0.0.1"
    assert peer_address(("::1", 5000, 0, 0)) == "::1"
    assert peer_address("/run/flare.sock") is None
    assert peer_address(None) is None


async def test_credentials_are_checked_only_for_a_body_past_the_anonymous_limit() -> None:
    api = FastAPI()

    @api.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    checks: list[str] = []

    def authenticated(headers: dict[str, str]) -> bool:
        checks.append(headers.get("x-valid", ""))
        return headers.get("x-valid") == "1"

    app = BodyLimit(api, LIMITS, authenticated)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.post("/echo", content=b"x" * 100, headers={"x-valid": "1"})).status_code == 200
        assert checks == []  # the common case costs no token check
        assert (await c.post("/echo", content=b"x" * 101, headers={"x-valid": "1"})).status_code == 200
        assert checks == ["1"]
