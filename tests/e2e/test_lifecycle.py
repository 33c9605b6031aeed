"""Server lifecycle: restarts lose no acknowledged message; shutdown tells clients to reconnect."""

from __future__ import annotations

import asyncio
import signal

from flare_im.protocol.errors import CloseCode, FlareError
from flare_im.sdk.client import Disconnected

from .conftest import Harness, ServerProcess

DM = "d:alice:bob"


async def test_kill_9_loses_no_acknowledged_message(server: ServerProcess) -> None:
    h = Harness(server)
    await h.user("alice")
    await h.user("bob")
    alice = await h.device("alice", reconnect=False)
    acked: list[int] = []
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
            acked.append(ack.seq)
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
        stored = {m.seq for m in await bob.history(DM)}
        assert set(acked) <= stored
        seqs = sorted(stored)
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
        # Sending resumes after the last stored seq, and a retry of a stored message is recognised.
        alice2 = await h2.device("alice")
        ack = await alice2.send(DM, "after restart")
        assert ack.seq == seqs[-1] + 1
        retry = await alice2.send(DM, "0-0", cmid="0-0")
        assert retry.duplicate
        assert retry.seq in stored
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
        assert [m.seq for m in await bob2.history(DM)] == [a.seq for a in acks]
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
