"""The cold tier with a real server (embedded): `flare archive run` with the server stopped moves every
message to Parquet files in the object store, and after a restart every history page, over REST and over
the WebSocket, is the same as before; an archived message can still be recalled; verify finds damage."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec

from flare_im.sdk.client import FlareClient
from flare_im.sdk.rest import RestClient

from .conftest import ServerProcess

DM = "d:alice:bob"
N = 130


def _flare(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flare_im.cli", "archive", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _pages(srv: ServerProcess, token: str) -> list[Any]:
    out: list[Any] = []
    queries: list[dict[str, int]] = [{}, {"limit": 500}]
    for limit in (1, 9, 50):
        queries += [{"after": a, "limit": limit} for a in [*range(0, N, 11), N - 1, N]]
        queries += [{"before": b, "limit": limit} for b in [*range(2, N, 13), N, N + 1]]
    async with httpx.AsyncClient(base_url=srv.api_url, headers={"authorization": f"Bearer {token}"}) as http:
        for q in queries:
            reply = await http.get(f"/v1/conversations/{DM}/messages", params=q)
            assert reply.status_code == 200, reply.text
            out.append(reply.content)  # the bytes as served
        listing = await http.get("/v1/conversations", params={"recent": 5})
        assert listing.status_code == 200
        out.append(listing.content)
    client = FlareClient(srv.ws_url, token, "puller")
    await client.connect()
    try:
        for q in queries:
            page = await client.pull(DM, **q)
            out.append(msgspec.json.encode(msgspec.structs.replace(page, id=0)))
    finally:
        await client.close()
    return out


async def test_history_is_the_same_after_archiving(server: ServerProcess) -> None:
    admin = RestClient(server.api_url, admin_key=server.admin_key)
    tokens = {}
    for uid in ("alice", "bob"):
        await admin.admin_create_user(uid, display_name=uid)
        tokens[uid] = await admin.admin_issue_token(uid)
    await admin.aclose()
    alice = FlareClient(server.ws_url, tokens["alice"], "phone")
    await alice.connect()
    for i in range(N - 3):
        await alice.send(DM, f"message {i}")
    await alice.edit(DM, 2, "edited", base_version=1)
    await alice.react(DM, 4, "👍")
    await alice.recall(DM, 6)
    await alice.close()
    before = await _pages(server, tokens["bob"])
    refused = _flare(server.data_dir, "run", "--older-than", "0")  # not beside a running server
    assert refused.returncode == 2
    assert "a server is running" in refused.stderr
    assert "hot rows (SQLite): 130" in _flare(server.data_dir, "status").stdout
    server.stop()

    await asyncio.sleep(0.01)
    run = _flare(server.data_dir, "run", "--older-than", "0")
    assert run.returncode == 0, run.stderr
    assert "archived 1 parts, 130 rows" in run.stdout
    status = _flare(server.data_dir, "status")
    assert "hot rows (SQLite): 0" in status.stdout
    assert "archived: 1 parts, 130 rows" in status.stdout

    server.start()
    assert await _pages(server, tokens["bob"]) == before

    alice = FlareClient(server.ws_url, tokens["alice"], "phone")
    await alice.connect()
    try:
        ack = await alice.recall(DM, 3)  # an archived message
        assert ack.seq == N + 1
        [recalled] = (await alice.pull(DM, after=2, limit=1)).items
        assert (recalled.seq, recalled.state, recalled.body) == (3, "recalled", {})
        untouched = (await alice.pull(DM, after=0, limit=6)).items
        assert [m.body.get("text") for m in untouched] == ["message 0", "edited", None, "message 3", "message 4", None]
        assert [m.state for m in untouched] == ["", "", "recalled", "", "", "recalled"]
        assert untouched[3].reactions == {"👍": ["alice"]}
    finally:
        await alice.close()
    server.stop()

    assert _flare(server.data_dir, "verify").returncode == 0
    [parquet] = (server.data_dir / "media" / "objects" / "archive").rglob("*.parquet")
    data = bytearray(parquet.read_bytes())
    data[100] ^= 0x55
    parquet.write_bytes(bytes(data))
    verify = _flare(server.data_dir, "verify")
    assert verify.returncode == 1
    assert "FAILED d:alice:bob" in verify.stdout
    assert "checksum" in verify.stdout
