"""End-to-end fixtures: a real `flare serve` process on free loopback ports, driven over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from flare_im.devcluster import free_port, wait_for_line
from flare_im.sdk.client import FlareClient
from flare_im.sdk.rest import RestClient

# What a server must never log, whatever a client does: Python tracebacks, and lines at ERROR or above, in our
# JSON format or in uvicorn's plain one (docs/operations.md alerts on exactly these).
_BAD_LOG_LINE = re.compile(r'Traceback \(most recent call last\)|"level": ?"(ERROR|CRITICAL)"|^(ERROR|CRITICAL):', re.M)


def server_log_problems(text: str) -> list[str]:
    """The lines of a server log that fail a test: tracebacks and ERROR/CRITICAL records."""
    return [line for line in text.splitlines() if _BAD_LOG_LINE.search(line)]


@dataclass
class ServerProcess:
    """A real `flare serve`. Stopping it fails the test when the server logged a traceback or an ERROR line, or
    (stopped with SIGTERM) exited non-zero, unless the test said it expects that (``expect_errors``)."""

    data_dir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    expect_errors: bool = False
    api_port: int = 0
    ws_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log: Any = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/v1/ws"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def start(self) -> None:
        # A free port may be taken (by another test's connection) before the server binds it: new ports then.
        for _ in range(2):
            try:
                self.start_on(free_port(), free_port())
                return
            except RuntimeError as exc:
                if "cannot listen on" not in str(exc):
                    raise
        self.start_on(free_port(), free_port())

    def start_on(self, api_port: int, ws_port: int) -> None:
        self.api_port, self.ws_port = api_port, ws_port
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        env = {**os.environ, "FLARE_LOG_LEVEL": "WARNING", **self.env_overrides}
        log = self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flare_im.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--api-port",
                str(self.api_port),
                "--ws-port",
                str(self.ws_port),
                "--data-dir",
                str(self.data_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )
        if wait_for_line(self.proc, b"flare ready", 30) is not None:
            return
        self.proc.kill()  # hung or dead: it must not outlive the failed start
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        log.close()
        self.proc = None
        raise RuntimeError(f"server did not start within 30 s: {self.log_path.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        self.proc = None
        self.check_log(rc if sig == signal.SIGTERM else None)
        return rc

    def check_log(self, exit_code: int | None = None) -> None:
        """Fails unless the log so far is clean and a graceful stop's ``exit_code`` is 0."""
        if self.expect_errors or self.log_path is None:
            return
        text = self.log_path.read_text(errors="replace")
        problems = server_log_problems(text)
        assert not problems, f"the server logged {len(problems)} error lines, e.g. {problems[:3]}:\n{text[-3000:]}"
        assert exit_code in (None, 0), f"the server exited {exit_code} on SIGTERM:\n{text[-3000:]}"

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    yield srv
    if srv.proc is not None:
        end_raw_sockets()
        srv.stop()


class Harness:
    """Creates users (through the admin API, as a business backend would) and connects their devices."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.admin = RestClient(srv.api_url, admin_key=srv.admin_key)
        self.clients: list[FlareClient] = []
        self.tokens: dict[str, str] = {}
        self._rest: dict[str, RestClient] = {}

    async def user(self, uid: str) -> str:
        await self.admin.admin_create_user(uid, display_name=uid.title())
        self.tokens[uid] = await self.admin.admin_issue_token(uid)
        return self.tokens[uid]

    def rest(self, uid: str) -> RestClient:
        if uid not in self._rest:
            self._rest[uid] = RestClient(self.srv.api_url, token=self.tokens[uid])
        return self._rest[uid]

    async def device(self, uid: str, device: str = "d1", **kw: object) -> FlareClient:
        client = FlareClient(self.srv.ws_url, self.tokens[uid], device, **kw)  # type: ignore[arg-type]
        await client.connect()
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        for r in self._rest.values():
            await r.aclose()
        await self.admin.aclose()


@pytest.fixture
async def harness(server: ServerProcess) -> AsyncIterator[Harness]:
    h = Harness(server)
    yield h
    await h.close()


class RawWs(WSListener):
    """A bare WebSocket peer for sending arbitrary bytes and reading exactly what the server sends."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.close_code: int | None = None
        self.transport: WSTransport | None = None
        self.disconnected = asyncio.Event()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            self.frames.put_nowait(frame.get_payload_as_bytes())
        elif frame.msg_type is WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected.set()

    def send_text(self, data: bytes | str) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, data.encode() if isinstance(data, str) else data)

    def send_binary(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.BINARY, data)

    async def recv_json(self, timeout: float = 5.0) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(await asyncio.wait_for(self.frames.get(), timeout))
        return out

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(self.disconnected.wait(), timeout)
        return self.close_code


_open_raw: list[RawWs] = []


async def raw_connect(url: str, **kw: Any) -> RawWs:
    _, listener = await ws_connect(RawWs, url, **kw)
    assert isinstance(listener, RawWs)
    _open_raw.append(listener)
    return listener


def end_raw_sockets() -> None:
    """Shuts down (FIN both ways) the test's raw sockets still open, without the event loop: a sync fixture's
    teardown runs while the loop is stopped, so a client the server tells to close at shutdown could not answer,
    and the server would wait out its linger time (gateway/linger.py) for every such socket."""
    for ws in _open_raw:
        sock = ws.transport.underlying_transport.get_extra_info("socket") if ws.transport is not None else None
        if sock is None or ws.disconnected.is_set():
            continue
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(sock.fileno())) as dup:
            dup.shutdown(socket.SHUT_RDWR)


@pytest.fixture(autouse=True)
async def _close_raw_sockets() -> AsyncIterator[None]:
    yield
    while _open_raw:
        ws = _open_raw.pop()
        if ws.transport is not None and not ws.disconnected.is_set():
            ws.transport.disconnect(graceful=False)
            await asyncio.wait_for(ws.disconnected.wait(), 5)


async def raw_authed(srv: ServerProcess, token: str, device: str = "raw") -> RawWs:
    ws = await raw_connect(srv.ws_url)
    ws.send_text(json.dumps({"type": "auth", "id": 1, "token": token, "device": device}))
    reply = await ws.recv_json()
    assert reply["type"] == "auth_ok", reply
    return ws
