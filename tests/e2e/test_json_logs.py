"""The log of a real `flare serve` at DEBUG: every line is one JSON object (uvicorn's and picows' too), and no
secret, token, password or message body sent through any path appears in it, even when the request fails."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from flare_im.devcluster import free_port
from flare_im.protocol.errors import FlareError
from flare_im.sdk.client import FlareClient
from flare_im.sdk.rest import RestClient

from .conftest import ServerProcess, raw_connect

MARK = "S3CR3T"  # every secret and body below carries it: the log must not
JWT_SECRET = f"jwt-{MARK}-0123456789abcdef0123456789abcdef"
ADMIN_KEY = f"admin-{MARK}-0123456789abcdef"
PASSWORD = f"pw-{MARK}-correct horse"


async def test_every_line_is_json_and_no_secret_is_logged(tmp_path: Path) -> None:
    metrics_port = free_port()
    srv = ServerProcess(
        tmp_path / "data",
        env_overrides={
            "FLARE_LOG_LEVEL": "DEBUG",
            "FLARE_JWT_SECRET": JWT_SECRET,
            "FLARE_ADMIN_KEY": ADMIN_KEY,
            "FLARE_MAX_FRAME_BYTES": "1024",  # frames past 16 KiB are refused by the transport (close 1009)
            "FLARE_METRICS_PORT": str(metrics_port),
        },
    )
    srv.start()
    tokens: list[str] = []
    try:
        tokens = await _exercise(srv, metrics_port)
    finally:
        srv.stop()  # fails on an ERROR line or a traceback: nothing below is the server's fault
    assert srv.log_path is not None
    text = srv.log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    loggers: set[str] = set()
    for line in lines:
        record = json.loads(line)  # every line, whoever logged it
        assert {"ts", "level", "logger", "msg"} <= record.keys(), line
        assert record["level"] in ("DEBUG", "INFO", "WARNING"), line
        loggers.add(record["logger"])
    assert any(name.startswith("uvicorn") for name in loggers), loggers
    assert any(name.startswith("picows") for name in loggers), loggers  # the oversize frame's warning
    assert MARK not in text
    for token in tokens:
        assert token not in text


async def _exercise(srv: ServerProcess, metrics_port: int) -> list[str]:
    tokens: list[str] = []
    async with RestClient(srv.api_url) as rest:
        registered = await rest.register("alice", PASSWORD)
        tokens += [registered["access_token"], registered["refresh_token"]]
        with pytest.raises(FlareError, match="password"):
            await rest.login("alice", f"wrong-{MARK}-password")
        tokens.append((await rest.login("alice", PASSWORD))["access_token"])
        await rest.request("POST", "/v1/auth/register", json={"username": "bob", "password": f"pw-{MARK}-bob-pass"})
        await rest.send("d:alice:bob", "c1", {"text": f"rest body {MARK}"})
    async with httpx.AsyncClient(base_url=srv.api_url) as http:
        assert (await http.get("/v1/me", headers={"Authorization": f"Bearer forged-{MARK}-token"})).status_code == 401
        forged_jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0." + MARK
        assert (await http.get("/v1/me", headers={"Authorization": f"Bearer {forged_jwt}"})).status_code == 401
        assert (await http.get("/v1/admin/filter/rules", headers={"X-Admin-Key": f"no-{MARK}"})).status_code == 401
        bad_json = f'{{"username": "alice", "password": "{MARK}"'.encode()
        assert (await http.post("/v1/auth/login", content=bad_json)).status_code >= 400
        assert (await http.get(f"/v1/users?ids={MARK}&token={MARK}")).status_code == 401
        assert (await http.get(f"http://127.0.0.1:{metrics_port}/{MARK}?token={MARK}")).status_code == 404
    # A request line no HTTP parser accepts (uvicorn logs it at WARNING).
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.api_port)
    writer.write(f"GET /{MARK} HTTP/9.9 {MARK}\r\n\x00\r\n\r\n".encode())
    await writer.drain()
    assert (await asyncio.wait_for(reader.read(100), 10)).startswith(b"HTTP/1.1 400")
    writer.close()

    alice = FlareClient(srv.ws_url, tokens[-1], "phone")
    await alice.connect()
    await alice.send("d:alice:bob", f"ws body {MARK}")
    await alice.close()
    for frame in (f'{{"type": "send", "id": 1, "body": "{MARK}"', f'{{"type": "{MARK}", "id": 2}}'):
        ws = await raw_connect(srv.ws_url)  # junk: an error reply
        ws.send_text(frame)
        assert (await ws.recv_json())["type"] == "error"
    forged = await raw_connect(srv.ws_url)
    forged.send_text(json.dumps({"type": "auth", "id": 1, "token": f"eyJ{MARK}.x.y", "device": MARK}))
    assert await forged.wait_closed() == 4001
    huge = await raw_connect(srv.ws_url)
    huge.send_text(MARK * 10_000)  # 60 KB: over the transport's limit (16 x 1 KiB)
    assert await huge.wait_closed() == 1009
    return tokens
