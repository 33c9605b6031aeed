"""Accounts against a real server, over REST and the WebSocket (issue 10, items 7, 9 and 10): login limits answer
429 with Retry-After, a logged-out or revoked token and a token of a user that does not exist get 401 on both
transports, ids are normalised (``Alice`` logs in as ``alice``), names with control characters are refused."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from tests.e2e.conftest import ServerProcess, raw_authed, raw_connect

from flare_im.protocol.errors import CloseCode

PASSWORD = "correct horse battery"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path / "data", env_overrides={"FLARE_LOGIN_IP_LIMIT": "4", "FLARE_HASH_CONCURRENCY": "1"}
    )
    server.start()
    yield server
    if server.proc is not None:
        server.stop()


async def ws_refuses(srv: ServerProcess, token: str, fragment: str) -> None:
    raw = await raw_connect(srv.ws_url)
    raw.send_text(json.dumps({"type": "auth", "id": 1, "token": token, "device": "d"}))
    reply = await raw.recv_json()
    assert (reply["type"], reply["code"], reply["id"]) == ("error", 401, 1), reply
    assert fragment in reply["message"]
    assert await raw.wait_closed() == CloseCode.AUTH_FAILED


async def test_accounts_under_hostile_input(srv: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=srv.api_url) as http:
        # 10. One normal form of ids: Alice registers and logs in as alice; ALICE is the same account.
        r = await http.post("/v1/auth/register", json={"username": "Alice", "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert r.json()["user_id"] == "alice"
        r = await http.post("/v1/auth/register", json={"username": "ALICE", "password": PASSWORD})
        assert r.status_code == 409
        # Names with control characters are refused and create nothing.
        r = await http.post(
            "/v1/auth/register", json={"username": "mallory", "password": PASSWORD, "display_name": "\u202eevil"}
        )
        assert r.status_code == 422
        assert "control characters" in r.json()["error"]["message"]

        # 7. Login attempts per address: the 5th within a minute is 429 with Retry-After; nothing hashed.
        logins = [await http.post("/v1/auth/login", json={"username": "ALICE", "password": PASSWORD}) for _ in range(4)]
        assert [r.status_code for r in logins] == [200] * 4
        assert {r.json()["user_id"] for r in logins} == {"alice"}
        r = await http.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD})
        assert r.status_code == 429
        assert r.json()["error"]["retryable"] is True
        assert int(r.headers["Retry-After"]) == r.json()["error"]["detail"]["retry_after_s"] >= 1

        # 9. Logout revokes the presented access token on both transports, and its refresh token.
        session, other = logins[0].json(), logins[1].json()
        me = await http.get("/v1/me", headers={"Authorization": f"Bearer {session['access_token']}"})
        assert me.json()["user_id"] == "alice"
        assert me.json()["display_name"] == "alice"
        await raw_authed(srv, session["access_token"])
        r = await http.post("/v1/auth/logout", headers={"Authorization": f"Bearer {session['access_token']}"})
        assert r.status_code == 204
        r = await http.get("/v1/me", headers={"Authorization": f"Bearer {session['access_token']}"})
        assert r.status_code == 401
        await ws_refuses(srv, session["access_token"], "revoked")
        r = await http.post("/v1/auth/refresh", json={"refresh_token": session["refresh_token"]})
        assert r.status_code == 401
        # The other session still works, over both transports.
        await raw_authed(srv, other["access_token"])
        # A reused refresh token revokes the session that descends from it.
        fresh = (await http.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})).json()
        r = await http.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
        assert r.status_code == 401
        await ws_refuses(srv, fresh["access_token"], "revoked")

        # A correctly signed token of a user that does not exist: 401 on both transports.
        secret = (srv.data_dir / "jwt.secret").read_text().strip()
        now = int(time.time())
        ghost = jwt.encode(
            {"sub": "ghost", "iss": "flare", "typ": "access", "iat": now, "exp": now + 600, "sid": "s"},
            secret,
            algorithm="HS256",
        )
        r = await http.get("/v1/me", headers={"Authorization": f"Bearer {ghost}"})
        assert r.status_code == 401
        await ws_refuses(srv, ghost, "no such user")

        # The admin revokes every token of a user.
        admin = {"X-Admin-Key": srv.admin_key}
        r = await http.post("/v1/admin/users", json={"user_id": "Bob", "display_name": "Bob"}, headers=admin)
        assert r.json()["user_id"] == "bob"
        token = (await http.post("/v1/admin/users/BOB/tokens", headers=admin)).json()["access_token"]
        await raw_authed(srv, token)
        assert (await http.post("/v1/admin/users/bob/revoke", headers=admin)).status_code == 204
        await ws_refuses(srv, token, "revoked")
