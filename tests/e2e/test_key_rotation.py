"""`flare rotate-jwt-secret`: after a rotation and a restart, tokens of the old key still work on REST and the
WebSocket until the key is retired; new tokens name the new key."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import jwt

from flare_im.sdk.client import FlareClient
from flare_im.services.signing_keys import key_id

from .conftest import ServerProcess


def _me(srv: ServerProcess, token: str) -> int:
    return httpx.get(f"{srv.api_url}/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code


def _new_token(srv: ServerProcess, uid: str) -> str:
    reply = httpx.post(f"{srv.api_url}/v1/admin/users/{uid}/tokens", headers={"X-Admin-Key": srv.admin_key})
    reply.raise_for_status()
    token: str = reply.json()["access_token"]
    return token


async def _ws_auth(srv: ServerProcess, token: str) -> str:
    async with FlareClient(srv.ws_url, token, "phone", reconnect=False) as client:
        return client.user


def test_rotation_keeps_old_tokens_working_until_the_key_is_retired(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    httpx.post(
        f"{srv.api_url}/v1/admin/users", json={"user_id": "alice"}, headers={"X-Admin-Key": srv.admin_key}
    ).raise_for_status()
    old_token = _new_token(srv, "alice")
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    srv.stop()

    done = subprocess.run(
        [sys.executable, "-m", "flare_im.cli", "rotate-jwt-secret", "--data-dir", str(srv.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    new_secret = (srv.data_dir / "jwt.secret").read_text().strip()
    assert key_id(new_secret) in done.stdout
    assert key_id(new_secret) != old_kid

    srv.start()
    assert _me(srv, old_token) == 200
    assert asyncio.run(_ws_auth(srv, old_token)) == "alice"
    new_token = _new_token(srv, "alice")
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(new_secret)
    assert _me(srv, new_token) == 200
    srv.stop()

    (srv.data_dir / "jwt.previous").unlink()  # the old key retired for good
    srv.start()
    assert _me(srv, old_token) == 401
    assert _me(srv, new_token) == 200
    srv.stop()
