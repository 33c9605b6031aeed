"""Server lifecycle: restarts lose no acknowledged message; shutdown tells clients to reconnect."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flare_im.devcluster import free_port
from flare_im.protocol.errors import CloseCode, ErrorCode, FlareError
from flare_im.protocol.frames import Ack
from flare_im.sdk.client import Disconnected

from .conftest import Harness, ServerProcess, raw_authed, raw_connect

DM = "d:alice:bob"


async def test_kill_9_loses_no_acknowledged_message(server: ServerProcess) -> None:
    h = Harness(server)
    await h.user("alice")
    await h.user("bob")
    alice = await h.device("alice", reconnect=False)
    acked: dict[str, Ack] = {}  # cmid -> the ack the server gave
    stop = asyncio.Event()

    async def sender(k: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                ack = await alice.send(DM, f"{k}-{i}", cmid=f"{k}-{i}", attempts=1)
            except (Disconnected, TimeoutError, ConnectionError):
                return
            except FlareError as exc:  # rate limited: this load is above the per-connection limit
                if not exc.retryable:
                    raise
                await asyncio.sleep(0.05)
                continue
            acked[f"{k}-{i}"] = ack
            i += 1

    tasks = [asyncio.create_task(sender(k)) for k in range(8)]
    await asyncio.sleep(1.0)
    server.kill()  # SIGKILL mid-stream: no flush, no goodbye
    stop.set()
    await asyncio.gather(*tasks)
    await h.close()
    assert len(acked) > 50

    server.start()
    h2 = Harness(server)
    try:
        h2.tokens = {"bob": await h2.admin.admin_issue_token("bob"), "alice": await h2.admin.admin_issue_token("alice")}
        bob = await h2.device("bob")
        history = await bob.history(DM)
        stored = {m.seq: m for m in history}
        for cmid, ack in acked.items():  # every ack names the message stored under it, exactly
            assert ack.seq in stored, cmid
            message = stored[ack.seq]
            assert (message.msg_id, message.cmid, message.body["text"]) == (ack.msg_id, cmid, cmid)
        seqs = sorted(stored)
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
        # A retry of any acked message after the restart gets the original ack back: same seq, same id.
        alice2 = await h2.device("alice")
        for cmid in [*list(acked)[:3], *list(acked)[-3:]]:
            retry = await alice2.send(DM, cmid, cmid=cmid, attempts=1)
            assert retry.duplicate, cmid
            assert (retry.seq, retry.msg_id) == (acked[cmid].seq, acked[cmid].msg_id), cmid
        # Sending resumes after the last stored seq; the retries stored nothing.
        ack = await alice2.send(DM, "after restart")
        assert ack.seq == seqs[-1] + 1
    finally:
        await h2.close()


async def test_graceful_shutdown_tells_clients_to_reconnect(server: ServerProcess) -> None:
    h = Harness(server)
    await h.user("alice")
    await h.user("bob")
    alice = await h.device("alice", reconnect=False)
    bob = await h.device("bob", reconnect=False)
    acks = await asyncio.gather(*(alice.send(DM, f"m{i}") for i in range(20)))
    assert server.stop(signal.SIGTERM) == 0
    await asyncio.sleep(0.3)
    for client in (alice, bob):
        assert client.last_kick is not None
        assert client.last_kick.reconnect
        assert client.last_kick.code == CloseCode.SERVER_RESTART
        assert not client.connected
    await h.close()

    server.start()
    h2 = Harness(server)
    try:
        h2.tokens = {"bob": await h2.admin.admin_issue_token("bob")}
        bob2 = await h2.device("bob")
        # Every acked message is there under its ack's seq (concurrent sends may be stored in any order).
        history = await bob2.history(DM)
        assert [m.seq for m in history] == sorted(a.seq for a in acks)
        assert {m.seq: m.msg_id for m in history} == {a.seq: a.msg_id for a in acks}
    finally:
        await h2.close()


async def test_client_reconnects_and_catches_up_after_server_restart(server: ServerProcess) -> None:
    h = Harness(server)
    await h.user("alice")
    await h.user("bob")
    alice = await h.device("alice")
    bob = await h.device("bob")  # reconnects by itself
    await alice.send(DM, "one")
    assert (await bob.next_message()).body["text"] == "one"
    assert server.proc is not None
    # Restart on the same ports, as a supervisor would.
    api_port, ws_port = server.api_port, server.ws_port
    server.stop()
    server.start_on(api_port, ws_port)
    await bob.wait_connected(timeout=15)
    await alice.wait_connected(timeout=15)
    await alice.send(DM, "two")
    assert (await bob.next_message()).body["text"] == "two"
    assert bob.reconnects >= 1
    await h.close()


async def test_during_shutdown_new_connections_are_refused_at_tcp(tmp_path: Path) -> None:
    """protocol.md §2: once shutting down, the listener is closed (connect is refused); a connection accepted
    before gets HTTP 503 to its upgrade, an upgraded one 503 to its auth and close 4001."""
    srv = ServerProcess(tmp_path / "data", env_overrides={"FLARE_SHUTDOWN_GRACE_S": "30"})
    srv.start()
    h = Harness(srv)
    await h.user("alice")
    assert srv.proc is not None
    # Accepted before the shutdown, in this order (the server accepts in order): a bare TCP connection with no
    # upgrade yet, a WebSocket that has not authenticated, and an authenticated one whose kick tells when
    # the shutdown has begun.
    tcp_reader, tcp_writer = await asyncio.open_connection("127.0.0.1", srv.ws_port)
    upgraded = await raw_connect(srv.ws_url)
    watcher = await raw_authed(srv, h.tokens["alice"], device="watcher")
    # An HTTP request whose body has not arrived keeps the REST server, and so the process, in its shutdown
    # (up to shutdown_grace_s) while the test looks at the gateway.
    _, http_writer = await asyncio.open_connection("127.0.0.1", srv.api_port)
    http_writer.write(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
    http_writer.write(b"Content-Length: 100\r\n\r\n{")
    await http_writer.drain()
    try:
        srv.proc.send_signal(signal.SIGTERM)
        kick = await watcher.recv_json(timeout=10)
        assert (kick["type"], kick["code"]) == ("kick", CloseCode.SERVER_RESTART)
        # Shutting down: a new connection is refused by the closed listener, not by a dead process.
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", srv.ws_port)
        assert srv.proc.poll() is None
        tcp_writer.write(
            b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(tcp_reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 503"), head
        upgraded.send_text(json.dumps({"type": "auth", "id": 1, "token": h.tokens["alice"], "device": "late"}))
        reply = await upgraded.recv_json()
        assert (reply["type"], reply["code"], reply["id"]) == ("error", ErrorCode.UNAVAILABLE, 1)
        assert reply["retryable"]
        assert await upgraded.wait_closed() == CloseCode.AUTH_FAILED
        assert srv.proc.poll() is None
    finally:
        for writer in (http_writer, tcp_writer):
            writer.close()
            await writer.wait_closed()
    assert srv.proc.wait(timeout=30) == 0  # the held request gone, the shutdown completes
    srv.stop()  # the process has exited: this checks its exit code and its log
    await h.close()


@pytest.mark.parametrize("taken", ["api", "ws"])
def test_a_port_in_use_fails_the_start_in_one_line_and_starts_nothing(tmp_path: Path, taken: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        ports = {"api": free_port(), "ws": free_port(), taken: busy}
        data = tmp_path / "data"
        run = subprocess.run(
            [sys.executable, "-m", "flare_im.cli", "serve", "--host", "127.0.0.1", "--api-port", str(ports["api"]),
             "--ws-port", str(ports["ws"]), "--data-dir", str(data)],
            capture_output=True, timeout=60,
        )  # fmt: skip
    what = "API" if taken == "api" else "WebSocket"
    assert run.returncode == 1
    assert run.stdout == b""  # never ready
    err = run.stderr.decode()
    assert f"flare: cannot listen on 127.0.0.1:{busy} for the {what}: Address already in use" in err
    assert "Traceback" not in err
    assert not (data / "flare.db").exists()  # failed before it opened (and created) anything
