"""What an anonymous peer may cost a real server: body sizes (413 before reading), header deadlines (408 for a
slow loris), and connections per address on both ports (429 on REST, close 1013 on the WebSocket)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from flare_im.protocol.errors import CloseCode

from .conftest import Harness, ServerProcess, raw_authed, raw_connect

LIMITS = {
    "FLARE_API_HEADER_TIMEOUT_S": "1",
    "FLARE_API_CONNECTIONS_PER_IP": "6",
    "FLARE_WS_CONNECTIONS_PER_IP": "3",
}


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data", env_overrides=LIMITS)
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


def rss_kib(srv: ServerProcess) -> int:
    assert srv.proc is not None
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _exchange(port: int, head: bytes, body_chunks: Sequence[bytes]) -> bytes:
    """A blocking client: the head, then the chunks until the server stops taking them, then the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: read what it said
                break
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                answer += data
        return answer


async def http_exchange(
    srv: ServerProcess, head: bytes, body_chunks: Sequence[bytes] = ()
) -> tuple[int, dict[str, str], bytes]:
    raw = await asyncio.to_thread(_exchange, srv.api_port, head, body_chunks)
    status_line, _, rest = raw.partition(b"\r\n")
    headers_raw, _, body = rest.partition(b"\r\n\r\n")
    headers = dict(line.decode().lower().split(": ", 1) for line in headers_raw.split(b"\r\n") if b": " in line)
    assert status_line.startswith(b"HTTP/1.1 "), raw[:200]
    return int(status_line.split()[1]), headers, body


async def test_a_declared_100_mb_login_is_refused_before_reading(limited: ServerProcess) -> None:
    before = rss_kib(limited)
    head = (
        b"POST /v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 104857600\r\n\r\n"
    )
    status, _, body = await http_exchange(limited, head, [b"x" * 65536] * 4)
    assert status == 413
    assert json.loads(body)["error"]["name"] == "too_large"
    assert rss_kib(limited) - before < 8 * 1024  # nothing of the 100 MB was buffered


async def test_a_chunked_body_is_cut_off_at_the_anonymous_limit(limited: ServerProcess) -> None:
    head = (
        b"POST /v1/auth/register HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"4000\r\n" + b"y" * 0x4000 + b"\r\n"  # 16 KiB per chunk, 4 MiB offered
    status, _, body = await http_exchange(limited, head, [chunk] * 256)
    assert status == 413
    assert "16384 bytes" in json.loads(body)["error"]["message"]


def _slow_loris(port: int) -> bytes:
    """One byte of a request head every 0.2 s, until the server answers or closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\n":
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                answer += data
        return answer


async def test_a_slow_loris_gets_408_at_the_header_deadline(limited: ServerProcess) -> None:
    started = time.monotonic()
    answer = await asyncio.to_thread(_slow_loris, limited.api_port)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"name":"request_timeout"' in answer
    assert time.monotonic() - started < 6  # closed at the 1 s deadline, not when the client gave up (7 s)


async def test_an_idle_connection_that_sends_nothing_is_closed(limited: ServerProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.api_port)
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_rest_connections_per_address_are_capped_and_freed(limited: ServerProcess) -> None:
    held = [await asyncio.open_connection("127.0.0.1", limited.api_port) for _ in range(6)]
    try:
        status, headers, body = await http_exchange(limited, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert status == 429
        assert headers["retry-after"] == "1"
        assert json.loads(body)["error"]["retryable"] is True
        # The WebSocket port has its own cap: REST connections cannot starve it.
        ws = await raw_connect(limited.ws_url)
        ws.send_text(json.dumps({"type": "auth", "id": 1, "token": "not-a-token", "device": "d"}))
        assert (await ws.recv_json())["code"] == 401
    finally:
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
    deadline = time.monotonic() + 10
    while True:  # the server sees the closes shortly after
        status, _, _ = await http_exchange(limited, b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        if status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert status == 200


async def test_websocket_connections_per_address_are_capped(limited: ServerProcess) -> None:
    h = Harness(limited)
    token = await h.user("ada")
    try:
        held = [await raw_authed(limited, token, device=f"d{i}") for i in range(3)]
        extra = await raw_connect(limited.ws_url)
        assert await extra.wait_closed() == CloseCode.TRY_AGAIN_LATER
        for i, ws in enumerate(held):  # the first three are untouched
            ws.send_text(json.dumps({"type": "sync", "id": 10 + i}))
            assert (await ws.recv_json())["id"] == 10 + i
        assert held[0].transport is not None
        held[0].transport.disconnect()
        await held[0].wait_closed()
        deadline = time.monotonic() + 10
        while True:  # the slot is given back once the server has seen the close
            again = await raw_connect(limited.ws_url)
            again.send_text(json.dumps({"type": "auth", "id": 1, "token": token, "device": "again"}))
            try:
                assert (await again.recv_json(timeout=2))["type"] == "auth_ok"
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "a freed slot was never given back"
    finally:
        await h.close()
