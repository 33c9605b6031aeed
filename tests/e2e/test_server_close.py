"""Closes the server starts reach a client that is still writing: the replies queued before the close,
then the close frame with its code, then the end of the stream, never a reset (gateway/linger.py).

The client here is a bare socket so that it can write a burst in one go, stop reading, and see exactly
which bytes arrive (a WebSocket library would hide a reset as 1006).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flare_im.protocol.errors import CloseCode, ErrorCode

from .conftest import Harness, ServerProcess

DM = "d:alice:bob"
_UPGRADE = (
    b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame (masked, as RFC 6455 requires; the zero mask leaves the payload as it is)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + b"\x00\x00\x00\x00" + payload


def text(obj: dict[str, Any]) -> bytes:
    return ws_frame(json.dumps(obj).encode())


@dataclass
class Received:
    frames: list[dict[str, Any]] = field(default_factory=list)  # data frames, in order
    close_code: int | None = None  # None: no close frame arrived (a reset or a bare end of stream)
    after_close: int = 0  # data frames after the close frame (must be none)
    ended: str = ""  # "eof" or the error that ended the stream


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, srv: ServerProcess, *, rcvbuf: int = 0) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.ws_port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
        writer.write(_UPGRADE)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def authed(self, token: str, device: str) -> RawClient:
        self.writer.write(text({"type": "auth", "id": 1, "token": token, "device": device}))
        opcode, payload = await self.frame()
        assert opcode == 0x1
        assert json.loads(payload)["type"] == "auth_ok", payload
        return self

    async def frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def receive_all(self, timeout: float = 20) -> Received:
        """Everything until the server's stream ends (it must end: the server closed)."""
        got = Received()

        async def run() -> None:
            while True:
                try:
                    opcode, payload = await self.frame()
                except asyncio.IncompleteReadError as exc:
                    got.ended = "eof" if not exc.partial else "eof inside a frame"
                    return
                except OSError as exc:  # ConnectionResetError: the data the server sent last is lost
                    got.ended = repr(exc)
                    return
                if opcode == 0x8:
                    got.close_code = struct.unpack("!H", payload[:2])[0]
                elif got.close_code is not None:
                    got.after_close += 1
                elif opcode in (0x1, 0x2):
                    got.frames.append(json.loads(payload))

        await asyncio.wait_for(run(), timeout)
        return got

    def close(self) -> None:
        self.writer.transport.abort()


@pytest.fixture
async def fresh(tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, Harness, list[RawClient]]]:
    srv = ServerProcess(tmp_path / "close", env_overrides={"FLARE_SEND_BUFFER_BYTES": "65536"})
    srv.start()
    h = Harness(srv)
    clients: list[RawClient] = []
    await h.user("alice")
    await h.user("bob")
    yield srv, h, clients
    for c in clients:
        c.close()
    await h.close()
    srv.stop()


def pings(first: int, count: int) -> bytes:
    return b"".join(text({"type": "ping", "id": i}) for i in range(first, first + count))


async def test_rate_limit_close_reaches_a_client_that_keeps_writing(
    fresh: tuple[ServerProcess, Harness, list[RawClient]],
) -> None:
    srv, h, clients = fresh
    raw = await (await RawClient.connect(srv)).authed(h.tokens["alice"], "flood")
    clients.append(raw)
    # 400 pings in one write, then 400 more, before reading anything: past the burst (200) and the 50
    # rate-limited frames in a row after which the server closes with 4029.
    raw.writer.write(pings(0, 400))
    raw.writer.write(pings(400, 400))
    got = await raw.receive_all()
    assert got.close_code == CloseCode.RATE_LIMITED, got.ended
    assert (got.ended, got.after_close) == ("eof", 0)
    # Every frame the server read before it closed was answered, in order, and each answer arrived.
    assert [f["id"] for f in got.frames] == list(range(len(got.frames)))
    kinds = [f["type"] if f["type"] == "pong" else f["code"] for f in got.frames]
    assert kinds.count("pong") >= 199  # the burst of 200, less the auth frame
    assert kinds.count(ErrorCode.RATE_LIMITED) >= 50
    assert set(kinds) == {"pong", ErrorCode.RATE_LIMITED}
    assert len(got.frames) < 800
    # The server is fine, and nothing the flooder sent after the close was processed.
    alice = await h.device("alice")
    assert await alice.ping() > 0


async def test_frame_too_big_close_reaches_a_client_that_keeps_writing(
    fresh: tuple[ServerProcess, Harness, list[RawClient]],
) -> None:
    srv, h, clients = fresh
    raw = await (await RawClient.connect(srv)).authed(h.tokens["alice"], "big")
    clients.append(raw)
    raw.writer.write(pings(0, 3))
    for i in range(3):
        opcode, payload = await raw.frame()
        assert opcode == 0x1
        assert json.loads(payload)["id"] == i
    # One frame of 4 MiB, far over the hard limit (16 x 64 KiB), written at once, and more after it: the
    # server refuses it with 1009 while most of it is still unread.
    raw.writer.write(ws_frame(b"z" * (4 << 20)) + pings(3, 100))
    got = await raw.receive_all()
    assert got.close_code == 1009, got.ended
    assert (got.ended, got.after_close, got.frames) == ("eof", 0, [])
    # The client's fault is a WARNING in the server's log, never an ERROR (operations.md: ERROR is what
    # operators alert on). picows logs it before it sends the close, so the line is there by now.
    assert srv.log_path is not None
    log = srv.log_path.read_text()
    assert "exceeding max allowed size" in log
    assert '"level":"ERROR"' not in log, log[-2000:]


async def test_slow_consumer_close_reaches_a_client_that_keeps_writing(tmp_path: Path) -> None:
    srv = ServerProcess(
        tmp_path / "slow",
        env_overrides={
            "FLARE_SEND_BUFFER_BYTES": "65536",
            "FLARE_SLOW_CONSUMER_GRACE_S": "0.2",
            "FLARE_RATE_LIMIT_PER_S": "100000",
            "FLARE_RATE_LIMIT_BURST": "100000",
            "FLARE_PRESENCE_DEBOUNCE_S": "0",  # bob's presence tells when the server dropped his connection
        },
    )
    srv.start()
    h = Harness(srv)
    raw: RawClient | None = None
    try:
        await h.user("alice")
        await h.user("bob")
        alice = await h.device("alice")
        raw = await (await RawClient.connect(srv, rcvbuf=16384)).authed(h.tokens["bob"], "slow")
        [bob] = await alice.watch_presence(["bob"])
        assert bob.online
        raw.writer.write(pings(0, 10))  # answered, but the client reads nothing for now
        # Messages for bob until the kernel's buffers are full and the server's own buffer stays above its
        # mark: the server closes with 4008 (bob goes offline at that moment).
        offline = asyncio.ensure_future(alice.next_presence(60))
        text_8k = "x" * 8000
        sent = 0
        while not offline.done():
            await asyncio.gather(*(alice.send(DM, text_8k, cmid=f"m{sent + i}") for i in range(50)))
            sent += 50
        assert not (await offline).online
        raw.writer.write(pings(10, 200))  # still writing after the server gave up on it
        got = await raw.receive_all()
        assert got.close_code == CloseCode.SLOW_CONSUMER, got.ended
        assert (got.ended, got.after_close) == ("eof", 0)
        # What was queued before the close arrived whole: the first pongs, and pushes with no gap.
        seqs = [f["seq"] for f in got.frames if f["type"] == "msg"]
        assert seqs == list(range(1, len(seqs) + 1))
        # Up to all of them: the last batch may have been queued whole before the server gave up.
        assert 0 < len(seqs) <= sent
        assert [f["id"] for f in got.frames if f["type"] == "pong"] == list(range(10))
        assert (await alice.pull(DM)).max_seq == sent  # the sender was never affected
    finally:
        if raw is not None:
            raw.close()
        await h.close()
        srv.stop()
