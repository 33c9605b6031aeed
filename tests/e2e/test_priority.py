"""Priority (R4): call signalling goes ahead of bulk traffic (broadcast notices) in a node's outbound queues.

Bob's phone stops reading while broadcasts pour notices at it: the socket's buffers fill, the server's write
buffer passes its mark, and from then on the notices wait in the connection's own queue. Alice calls: the call
reaches bob's socket ahead of the notices held back, which follow in order once the phone reads again. Read on
the wire (a bare socket that parses frames), not through the SDK.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flare_im.sdk.rest import RestClient

from .conftest import Harness, ServerProcess

NOTICE = "通" * 4000  # the longest notice text: about 12 KB on the wire
CALL = {"data": {"type": "call", "action": "invite", "call_id": "call-1", "media": "audio"}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        tmp_path / "data",
        env_overrides={
            "FLARE_SEND_BUFFER_BYTES": "65536",  # the write buffer's mark: passed after a few notices
            "FLARE_SLOW_CONSUMER_GRACE_S": "120",  # the phone pauses longer than the default grace
            "FLARE_BROADCAST_RATE_PER_S": "100000",
            "FLARE_PUSH_ENABLED": "false",
            "FLARE_HEARTBEAT_S": "600",  # the phone does not answer pings while it is not reading
        },
    )
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


@pytest.fixture
async def harness(server: ServerProcess) -> AsyncIterator[Harness]:
    h = Harness(server)
    yield h
    await h.close()


class SlowPhone:
    """A WebSocket client on a bare blocking socket with a small receive buffer, which reads only when told."""

    def __init__(self, ws_url: str, token: str) -> None:
        host, port = re.match(r"ws://([^:/]+):(\d+)", ws_url).groups()  # type: ignore[union-attr]
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /v1/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: flare.v1.json\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.send({"type": "auth", "id": 1, "token": token, "device": "phone"})
        assert self.read_frames(1)[0]["type"] == "auth_ok"

    def send(self, frame: dict[str, Any]) -> None:
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        n = len(payload)
        length = bytes((0x80 | n,)) if n < 126 else bytes((0x80 | 126,)) + struct.pack("!H", n)
        self.sock.sendall(b"\x81" + length + mask + masked)

    def read_frames(self, count: int | None = None, idle_s: float = 3.0) -> list[dict[str, Any]]:
        """Data frames in wire order: ``count`` of them, or all until nothing came for ``idle_s``."""
        frames: list[dict[str, Any]] = []
        self.sock.settimeout(idle_s)
        while count is None or len(frames) < count:
            frame = self._next_frame()
            if frame is None:
                break
            frames.append(frame)
        return frames

    def _next_frame(self) -> dict[str, Any] | None:
        while True:
            header = self._header()
            if header is not None:
                offset, length = header
                if offset + length <= len(self.buffer):
                    opcode, payload = self.buffer[0] & 0x0F, self.buffer[offset : offset + length]
                    self.buffer = self.buffer[offset + length :]
                    if opcode in (1, 2):
                        decoded: dict[str, Any] = json.loads(payload)
                        return decoded
                    continue  # a ping: the test reads too rarely to answer it, and the grace is long
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                return None
            self.buffer += chunk

    def _header(self) -> tuple[int, int] | None:
        """(header size, payload length) of the frame at the buffer's start, once its header is complete."""
        b = self.buffer
        if len(b) < 2:
            return None
        length = b[1] & 0x7F
        if length == 126:
            return (4, struct.unpack("!H", b[2:4])[0]) if len(b) >= 4 else None
        if length == 127:
            return (10, struct.unpack("!Q", b[2:10])[0]) if len(b) >= 10 else None
        return 2, length

    def close(self) -> None:
        self.sock.close()


async def _metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_call_overtakes_the_notices_held_for_a_phone_that_is_not_reading(
    server: ServerProcess, harness: Harness
) -> None:
    await harness.user("alice")
    bob_token = await harness.user("bob")
    phone = await asyncio.to_thread(SlowPhone, server.ws_url, bob_token)
    try:
        admin = RestClient(server.api_url, admin_key=server.admin_key)
        async with admin, httpx.AsyncClient(base_url=server.api_url, timeout=10) as http:
            # Notices until the connection holds some back: its socket and write buffer are full.
            broadcasts = 0
            deadline = time.monotonic() + 90
            while await _metric(http, "flare_ws_bulk_held_total") < 5:
                assert time.monotonic() < deadline, f"nothing held back after {broadcasts} notices"
                for _ in range(10):
                    await admin.request("POST", "/v1/admin/broadcasts", admin=True,
                                        json={"text": NOTICE, "user_ids": ["bob"]})  # fmt: skip
                    broadcasts += 1
                await asyncio.sleep(0.2)
            await _settled(admin)
            held = await _metric(http, "flare_ws_bulk_held_total")
            dropped = await _metric(http, "flare_ws_bulk_dropped_total")

            call = await harness.rest("alice").send("d:alice:bob", "call-invite-1", CALL, kind="custom")

            wire = await asyncio.to_thread(phone.read_frames)
        messages = [f for f in wire if f["type"] == "msg"]
        notices = [m for m in messages if m["conv"] == "d:bob:system"]
        calls = [i for i, m in enumerate(messages) if m["conv"] == "d:alice:bob"]
        assert len(calls) == 1, "the call reached the phone once"
        assert messages[calls[0]]["seq"] == call["seq"]
        after = len(messages) - calls[0] - 1
        assert after >= 1, f"the call came after all {len(notices)} notices: it waited behind bulk traffic"
        assert after <= held - dropped  # only notices held back can follow it
        seqs = [m["seq"] for m in notices]
        assert seqs == sorted(seqs), "held notices keep their order"
        assert len(notices) == broadcasts - dropped  # each notice on the wire once; the dropped ones are pulled
        # Every notice is in bob's history, whatever the wire dropped: the log is the truth.
        history = await harness.rest("bob").history("d:bob:system", limit=1)
        assert history["max_seq"] == broadcasts
    finally:
        phone.close()


async def _settled(admin: RestClient) -> None:
    """Wait until every broadcast is delivered (appended and pushed or held)."""
    for _ in range(300):
        items = (await admin.request("GET", "/v1/admin/broadcasts?limit=500", admin=True))["items"]
        if all(b["state"] == "done" for b in items):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("broadcasts not delivered")
