"""Admin operations (issue U8) against a real `flare serve`: bans, kicks, deletion, broadcasts, statistics, the
audit log and scoped keys, observed on the wire (kick frames, close codes, pushed notices)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import RawWs, ServerProcess, raw_authed, raw_connect


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    # A slow broadcast rate, so that the bound is measurable with a few dozen users.
    srv = ServerProcess(
        tmp_path / "data",
        env_overrides={"FLARE_BROADCAST_RATE_PER_S": "20", "FLARE_ADMIN_STATS_INTERVAL_S": "1"},
    )
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop()


class Api:
    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.http = httpx.AsyncClient(base_url=srv.api_url, timeout=30)

    async def admin(self, method: str, path: str, *, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"X-Admin-Key": key or self.srv.admin_key}
        return await self.http.request(method, path, headers=headers, **kw)

    async def ok(self, method: str, path: str, *, key: str | None = None, **kw: Any) -> Any:
        reply = await self.admin(method, path, key=key, **kw)
        assert reply.status_code < 300, reply.text
        return reply.json() if reply.content else None

    async def user(self, uid: str, password: str | None = None) -> dict[str, Any]:
        """A user with a password (registered): its tokens."""
        reply = await self.http.post(
            "/v1/auth/register", json={"username": uid, "password": password or f"{uid}-secret-pw"}
        )
        assert reply.status_code == 201, reply.text
        tokens: dict[str, Any] = reply.json()
        return tokens

    async def as_user(self, token: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return await self.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[Api]:
    a = Api(server)
    yield a
    await a.http.aclose()


async def kicked(ws: RawWs) -> tuple[dict[str, Any], int | None]:
    """The kick frame a connection got before its close, and the close code."""
    while True:
        frame = await ws.recv_json(timeout=10)
        if frame["type"] == "kick":
            return frame, await ws.wait_closed()


async def still_open(ws: RawWs, token_probe: int = 77) -> None:
    """The connection answers a ping: it was left alone."""
    ws.send_text(json.dumps({"type": "ping", "id": token_probe}))
    while True:
        frame = await ws.recv_json(timeout=5)
        if frame.get("id") == token_probe:
            assert frame["type"] == "pong", frame
            return


async def auth_refused(srv: ServerProcess, token: str) -> tuple[dict[str, Any], int | None]:
    ws = await raw_connect(srv.ws_url)
    ws.send_text(json.dumps({"type": "auth", "id": 1, "token": token, "device": "again"}))
    reply = await ws.recv_json()
    return reply, await ws.wait_closed()


async def test_ban_kicks_every_device_refuses_auth_with_the_reason_and_unban_restores(
    server: ServerProcess, api: Api
) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    sent = await api.as_user(alice["access_token"], "POST", "/v1/conversations/d:alice:bob/messages",
                             json={"cmid": "c1", "body": {"text": "hello"}})  # fmt: skip
    assert sent.status_code == 200, sent.text
    phone = await raw_authed(server, alice["access_token"], "phone")
    laptop = await raw_authed(server, alice["access_token"], "laptop")
    bobs = await raw_authed(server, bob["access_token"], "bob-phone")

    ban = await api.ok("POST", "/v1/admin/users/alice/ban", json={"reason": "spam links"})
    assert ban["user_id"] == "alice"
    assert ban["reason"] == "spam links"
    assert ban["kicked"] == 2
    for ws in (phone, laptop):
        frame, code = await kicked(ws)
        assert code == 4010
        assert frame["code"] == 4010
        assert frame["reconnect"] is False
        assert "spam links" in frame["reason"]
    await still_open(bobs)  # nobody else is touched

    login = await api.http.post("/v1/auth/login", json={"username": "alice", "password": "alice-secret-pw"})
    assert login.status_code == 401
    assert login.json()["error"]["detail"]["reason"] == "spam links"
    refresh = await api.http.post("/v1/auth/refresh", json={"refresh_token": alice["refresh_token"]})
    assert refresh.status_code == 401
    assert refresh.json()["error"]["detail"]["banned"] is True
    me = await api.as_user(alice["access_token"], "GET", "/v1/me")
    assert me.status_code == 401
    assert "spam links" in me.json()["error"]["message"]
    reply, code = await auth_refused(server, alice["access_token"])
    assert reply["type"] == "error"
    assert reply["code"] == 401
    assert reply["detail"]["reason"] == "spam links"
    assert code == 4010
    bans = await api.ok("GET", "/v1/admin/bans")
    assert [b["user_id"] for b in bans["items"]] == ["alice"]

    # Nothing else changed: bob still sees alice's profile and the conversation with her message.
    profile = (await api.as_user(bob["access_token"], "GET", "/v1/users", params={"ids": "alice"})).json()
    assert profile["items"][0]["display_name"] == "alice"
    history = (await api.as_user(bob["access_token"], "GET", "/v1/conversations/d:alice:bob/messages")).json()
    assert [m["body"]["text"] for m in history["items"]] == ["hello"]

    await api.ok("DELETE", "/v1/admin/users/alice/ban")
    assert (await api.admin("DELETE", "/v1/admin/users/alice/ban")).status_code == 404  # not banned any more
    assert (await api.as_user(alice["access_token"], "GET", "/v1/me")).status_code == 200  # the old token works
    back = await raw_authed(server, alice["access_token"], "phone")
    await still_open(back)
    login = await api.http.post("/v1/auth/login", json={"username": "alice", "password": "alice-secret-pw"})
    assert login.status_code == 200
    assert (await api.ok("GET", "/v1/admin/bans"))["items"] == []


async def test_ban_of_an_unknown_user_is_404_and_changes_nothing(api: Api) -> None:
    reply = await api.admin("POST", "/v1/admin/users/nobody/ban", json={"reason": "x"})
    assert reply.status_code == 404
    assert (await api.ok("GET", "/v1/admin/bans"))["items"] == []


async def test_kick_one_device_leaves_the_others(server: ServerProcess, api: Api) -> None:
    alice = await api.user("alice")
    phone = await raw_authed(server, alice["access_token"], "phone")
    laptop = await raw_authed(server, alice["access_token"], "laptop")
    out = await api.ok("POST", "/v1/admin/users/alice/devices/phone/kick")
    assert out == {"user_id": "alice", "kicked": 1}
    frame, code = await kicked(phone)
    assert (frame["code"], code) == (4011, 4011)
    await still_open(laptop)
    # The tokens still work: the device may come back.
    again = await raw_authed(server, alice["access_token"], "phone")
    await still_open(again)
    out = await api.ok("POST", "/v1/admin/users/alice/kick")
    assert out["kicked"] == 2
    assert (await kicked(laptop))[1] == 4011
    assert (await kicked(again))[1] == 4011


async def test_revoke_tokens_closes_every_device(server: ServerProcess, api: Api) -> None:
    alice = await api.user("alice")
    phone = await raw_authed(server, alice["access_token"], "phone")
    reply = await api.admin("POST", "/v1/admin/users/alice/revoke")
    assert reply.status_code == 204
    frame, code = await kicked(phone)
    assert (frame["code"], code) == (4012, 4012)
    assert (await api.as_user(alice["access_token"], "GET", "/v1/me")).status_code == 401
    login = await api.http.post("/v1/auth/login", json={"username": "alice", "password": "alice-secret-pw"})
    assert login.status_code == 200  # revoking is not banning


@pytest.mark.parametrize("messages", ["recall", "keep"])
async def test_delete_user_erases_the_profile_and_recalls_or_keeps_messages(
    server: ServerProcess, api: Api, messages: str
) -> None:
    alice = await api.user("alice")
    bob = await api.user("bob")
    carol = await api.user("carol")
    group = await api.as_user(alice["access_token"], "POST", "/v1/groups",
                              json={"name": "team", "members": ["bob", "carol"], "group_id": "team"})  # fmt: skip
    assert group.status_code == 201, group.text
    for i, conv in enumerate(["d:alice:bob", "g:team", "g:team"]):
        r = await api.as_user(alice["access_token"], "POST", f"/v1/conversations/{conv}/messages",
                              json={"cmid": f"a{i}", "body": {"text": f"from alice {i}"}})  # fmt: skip
        assert r.status_code == 200
    r = await api.as_user(bob["access_token"], "POST", "/v1/conversations/g:team/messages",
                          json={"cmid": "b1", "body": {"text": "from bob"}})  # fmt: skip
    assert r.status_code == 200
    phone = await raw_authed(server, alice["access_token"], "phone")
    carols = await raw_authed(server, carol["access_token"], "carol-phone")

    out = await api.ok("DELETE", "/v1/admin/users/alice", params={"messages": messages})
    assert out == {"user_id": "alice", "kicked": 1, "recalled": 3 if messages == "recall" else 0}
    assert (await kicked(phone))[1] == 4013
    if messages == "recall":  # carol, online, gets the two recall events of the group
        recalls = []
        while len(recalls) < 2:
            frame = await carols.recv_json(timeout=10)
            if frame["type"] == "msg" and frame["kind"] == "recall":
                recalls.append(frame["body"]["target"])
        assert sorted(recalls) == [2, 3]

    login = await api.http.post("/v1/auth/login", json={"username": "alice", "password": "alice-secret-pw"})
    assert login.status_code == 401  # the credentials are gone
    gone = await api.as_user(alice["access_token"], "GET", "/v1/me")
    assert gone.status_code == 401
    assert gone.json()["error"]["detail"] == {"deleted": True}
    reply, code = await auth_refused(server, alice["access_token"])
    assert reply["type"] == "error"
    assert reply["detail"] == {"deleted": True}
    assert code == 4013
    profile = (await api.as_user(bob["access_token"], "GET", "/v1/users", params={"ids": "alice"})).json()
    assert profile["items"][0]["display_name"] == ""
    again = await api.http.post("/v1/auth/register", json={"username": "alice", "password": "another-pw-123"})
    assert again.status_code == 409  # the id stays taken: nobody can pose as the deleted user

    group_history = (await api.as_user(bob["access_token"], "GET", "/v1/conversations/g:team/messages")).json()
    by_alice = [m for m in group_history["items"] if m["sender"] == "alice" and m["kind"] == "text"]
    assert len(by_alice) == 2
    bobs = [m for m in group_history["items"] if m["sender"] == "bob"]
    assert bobs[0]["body"] == {"text": "from bob"}  # other users' messages are never touched
    direct = (await api.as_user(bob["access_token"], "GET", "/v1/conversations/d:alice:bob/messages")).json()
    texts = [m for m in direct["items"] if m["kind"] == "text"]
    if messages == "recall":
        assert all(m["state"] == "recalled" for m in by_alice + texts)
    else:
        assert [m["body"]["text"] for m in by_alice] == ["from alice 1", "from alice 2"]
        assert texts[0]["body"]["text"] == "from alice 0"
    assert (await api.admin("DELETE", "/v1/admin/users/alice")).status_code == 410
    assert (await api.admin("POST", "/v1/admin/users/alice/ban", json={})).status_code == 410


async def notices(ws: RawWs, seconds: float) -> list[dict[str, Any]]:
    """The notice frames a connection receives within ``seconds``."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = await ws.recv_json(timeout=left)
        except TimeoutError:
            break
        if frame["type"] == "msg" and frame["kind"] == "system" and frame["body"].get("event") == "notice":
            got.append(frame)
    return got


async def wait_done(api: Api, broadcast_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state: dict[str, Any] = await api.ok("GET", f"/v1/admin/broadcasts/{broadcast_id}")
        if state["state"] == "done":
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"broadcast not done: {state}")


async def test_broadcast_reaches_every_listed_user_once_at_a_bounded_rate(server: ServerProcess, api: Api) -> None:
    users = [f"u{i:02d}" for i in range(30)]
    tokens = await api.ok("POST", "/v1/admin/users:batch", json={"users": [{"user_id": u} for u in users]})
    assert len(tokens["created"]) == 30
    issued = (await api.ok("POST", "/v1/admin/tokens", json={"user_ids": users}))["tokens"]
    sockets = {u: await raw_authed(server, issued[u], "d") for u in users}
    listed = users[:25]
    started = time.monotonic()
    reply = await api.admin("POST", "/v1/admin/broadcasts", json={"text": "maintenance at 02:00", "title": "Ops",
                                                                  "user_ids": listed})  # fmt: skip
    assert reply.status_code == 202, reply.text
    accepted = time.monotonic() - started
    broadcast = reply.json()
    assert broadcast["state"] in ("planning", "sending")
    assert broadcast["target"] == "list"
    assert accepted < 1.0  # the request does not wait for the fan-out
    done = await wait_done(api, broadcast["broadcast_id"])
    took = time.monotonic() - started
    assert done["recipients"] == 25
    assert done["delivered"] == 25
    assert took >= 24 / 20  # 25 notices at 20 per second: the first at once, the last ~1.2 s later
    received = {u: await notices(ws, 0.5 if u in listed else 1.0) for u, ws in sockets.items()}
    for u in listed:
        assert len(received[u]) == 1, (u, received[u])
        frame = received[u][0]
        assert frame["conv"] == f"d:system:{u}"
        assert frame["sender"] == "system"
        assert frame["seq"] >= 1
        assert frame["body"]["text"] == "maintenance at 02:00"
        assert frame["body"]["title"] == "Ops"
    assert all(received[u] == [] for u in users[25:])
    # A device that was offline finds the notice by seq in its conversation list and history.
    convs = (await api.as_user(issued["u00"], "GET", "/v1/conversations")).json()
    notice_conv = next(c for c in convs["items"] if c["conv"] == "d:system:u00")
    assert notice_conv["unread"] == 1


async def test_broadcast_to_all_users_and_bad_requests(server: ServerProcess, api: Api) -> None:
    users = ["amy", "ben", "cat"]
    await api.ok("POST", "/v1/admin/users:batch", json={"users": [{"user_id": u} for u in users]})
    issued = (await api.ok("POST", "/v1/admin/tokens", json={"user_ids": users}))["tokens"]
    sockets = {u: await raw_authed(server, issued[u], "d") for u in users}
    for bad in ({"text": "x"}, {"text": "x", "all": True, "user_ids": ["amy"]}, {"text": "", "all": True},
                {"text": "x", "user_ids": ["amy", "nobody"]}):  # fmt: skip
        reply = await api.admin("POST", "/v1/admin/broadcasts", json=bad)
        assert reply.status_code in (404, 422), (bad, reply.text)
    assert (await api.ok("GET", "/v1/admin/broadcasts"))["items"] == []  # the refused ones left nothing
    broadcast = await api.ok("POST", "/v1/admin/broadcasts", json={"text": "hello everyone", "all": True})
    done = await wait_done(api, broadcast["broadcast_id"])
    assert done["recipients"] == 3
    assert done["delivered"] == 3
    for u in users:
        assert len(await notices(sockets[u], 0.5)) == 1


async def test_stats_match_what_the_clients_did(server: ServerProcess, api: Api) -> None:
    users = ["s1", "s2", "s3", "s4"]
    await api.ok("POST", "/v1/admin/users:batch", json={"users": [{"user_id": u} for u in users]})
    issued = (await api.ok("POST", "/v1/admin/tokens", json={"user_ids": users}))["tokens"]
    before = await api.ok("GET", "/v1/admin/stats")
    assert before["online_devices"] == 0
    assert before["online_users"] == 0
    await raw_authed(server, issued["s1"], "a")
    await raw_authed(server, issued["s1"], "b")
    await raw_authed(server, issued["s2"], "a")
    for i in range(10):
        conv = "d:s1:s2" if i % 2 else "d:s1:s3"
        r = await api.as_user(issued["s1"], "POST", f"/v1/conversations/{conv}/messages",
                              json={"cmid": f"m{i}", "body": {"text": "x"}})  # fmt: skip
        assert r.status_code == 200
    stats = await api.ok("GET", "/v1/admin/stats", params={"window_s": 60})
    assert stats["online_devices"] == 3
    assert stats["online_users"] == 2
    assert stats["active_conversations"] == 2
    [node] = stats["nodes"]
    assert node["connections"] == 3
    assert node["events"] - before["nodes"][0]["events"] == 10
    assert stats["events_per_s"] > 0, json.dumps(stats)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    week_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 6 * 86400))
    dau = await api.ok("GET", "/v1/admin/stats/daily-active", params={"from": week_ago, "to": today})
    assert dau["days"] == [{"day": today, "users": 2}]
    assert dau["distinct_users"] == 2
    bad = await api.admin("GET", "/v1/admin/stats/daily-active", params={"from": "2026-13-01", "to": today})
    assert bad.status_code == 422
    backwards = await api.ok("GET", "/v1/admin/stats/daily-active", params={"from": today, "to": week_ago})
    assert backwards["days"] == []
    assert backwards["distinct_users"] == 0


# Every mutating admin endpoint, with a body that would succeed for a full key.
MUTATIONS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/admin/users", {"user_id": "newbie"}),
    ("POST", "/v1/admin/users:batch", {"users": [{"user_id": "newbie2"}]}),
    ("POST", "/v1/admin/tokens", {"user_ids": ["target"]}),
    ("POST", "/v1/admin/users/target/tokens", None),
    ("POST", "/v1/admin/users/target/revoke", None),
    ("POST", "/v1/admin/invites", {"max_uses": 1}),
    ("POST", "/v1/admin/users/target/ban", {"reason": "x"}),
    ("DELETE", "/v1/admin/users/target/ban", None),
    ("POST", "/v1/admin/users/target/kick", None),
    ("POST", "/v1/admin/users/target/devices/d/kick", None),
    ("DELETE", "/v1/admin/users/target", None),
    ("POST", "/v1/admin/broadcasts", {"text": "x", "all": True}),
    ("POST", "/v1/admin/keys", {"scope": "full"}),
    ("POST", "/v1/admin/filter/rules", {"pattern": "badword"}),
]


async def test_scoped_keys_read_only_is_refused_on_every_mutation_and_everything_is_audited(
    server: ServerProcess, api: Api
) -> None:
    await api.ok("POST", "/v1/admin/users", json={"user_id": "target"})
    read = await api.ok("POST", "/v1/admin/keys", json={"scope": "read", "note": "dashboard"})
    moderation = await api.ok("POST", "/v1/admin/keys", json={"scope": "moderation", "note": "support"})
    assert read["key"].startswith("fak_")
    assert read["scope"] == "read"
    keys = await api.ok("GET", "/v1/admin/keys")
    assert {k["key_id"] for k in keys["items"]} == {read["key_id"], moderation["key_id"]}
    assert all("key" not in k or k["key"] == "" for k in keys["items"])  # the secret is never shown again

    # Every mutating admin route the server has (others' features' too) is refused to a read key.
    spec = (await api.http.get("/openapi.json")).json()
    routed = [(m.upper(), p) for p, ops in spec["paths"].items() if p.startswith("/v1/admin/") for m in ops
              if m not in ("get", "head", "options")]  # fmt: skip
    assert len(routed) >= len(MUTATIONS)
    before_users = await api.ok("GET", "/v1/admin/audit")
    refused_before = len(routed)
    for method, path in routed:
        concrete = re.sub(r"\{[^}]+\}", "target", path)
        reply = await api.admin(method, concrete, key=read["key"], json={})
        assert reply.status_code == 403, (method, path, reply.text)

    for method, path, body in MUTATIONS:
        reply = await api.admin(method, path, key=read["key"], json=body)
        assert reply.status_code == 403, (method, path, reply.text)
        assert "scope" in reply.json()["error"]["message"]
    # Nothing changed: no user, ban, key, broadcast or rule was made, the target still exists and may log in.
    assert (await api.ok("GET", "/v1/admin/bans"))["items"] == []
    assert (await api.ok("GET", "/v1/admin/broadcasts"))["items"] == []
    assert len((await api.ok("GET", "/v1/admin/keys"))["items"]) == 2
    assert (await api.ok("GET", "/v1/admin/filter/rules"))["items"] == []
    assert (await api.admin("POST", "/v1/admin/users", json={"user_id": "newbie"})).status_code == 201
    assert (await api.ok("GET", "/v1/admin/invites"))["items"] == []
    # Reads are allowed to a read key.
    assert (await api.admin("GET", "/v1/admin/stats", key=read["key"])).status_code == 200

    # A moderation key may ban, not create users or keys.
    assert (await api.admin("POST", "/v1/admin/users/target/ban", key=moderation["key"], json={})).status_code == 200
    assert (await api.admin("DELETE", "/v1/admin/users/target/ban", key=moderation["key"])).status_code == 204
    assert (await api.admin("POST", "/v1/admin/keys", key=moderation["key"], json={"scope": "read"})).status_code == 403

    audit = (await api.ok("GET", "/v1/admin/audit", params={"limit": 1000}))["items"]
    # The refusals, then newbie, ban, unban and the moderation key's refused key.
    assert len(audit) - len(before_users["items"]) == refused_before + len(MUTATIONS) + 4
    refused = [e for e in audit if e["key_id"] == read["key_id"]]
    assert len(refused) == refused_before + len(MUTATIONS)
    assert all(e["status"] == 403 for e in refused)
    mod = [e for e in audit if e["key_id"] == moderation["key_id"]]
    assert [(e["action"], e["status"]) for e in mod] == [
        ("POST /v1/admin/keys", 403),
        ("DELETE /v1/admin/users/{user_id}/ban", 204),
        ("POST /v1/admin/users/{user_id}/ban", 200),
    ]
    assert mod[2]["target"] == "user_id=target"
    root = [e for e in audit if e["key_id"] == "root"]
    assert ("POST /v1/admin/keys", 201) in [(e["action"], e["status"]) for e in root]
    only_mod = (await api.ok("GET", "/v1/admin/audit", params={"key_id": moderation["key_id"]}))["items"]
    assert only_mod == mod

    # A revoked key is refused at once; an unknown one too.
    assert (await api.admin("DELETE", f"/v1/admin/keys/{read['key_id']}")).status_code == 204
    assert (await api.admin("GET", "/v1/admin/stats", key=read["key"])).status_code == 401
    assert (await api.admin("GET", "/v1/admin/stats", key="fak_000000000000.notakeyatallnotakey")).status_code == 401


async def test_a_broadcast_interrupted_by_a_restart_reaches_everyone_once(server: ServerProcess, api: Api) -> None:
    users = [f"r{i:02d}" for i in range(40)]
    await api.ok("POST", "/v1/admin/users:batch", json={"users": [{"user_id": u} for u in users]})
    broadcast = await api.ok("POST", "/v1/admin/broadcasts", json={"text": "before and after", "user_ids": users})
    await asyncio.sleep(1.0)  # 20 per second: about half are appended
    partly = await api.ok("GET", f"/v1/admin/broadcasts/{broadcast['broadcast_id']}")
    assert partly["state"] != "done"
    server.stop()
    server.start_on(server.api_port, server.ws_port)
    await api.http.aclose()
    api.http = httpx.AsyncClient(base_url=server.api_url, timeout=30)
    done = await wait_done(api, broadcast["broadcast_id"])
    assert done["recipients"] == 40
    assert done["delivered"] == 40
    tokens = (await api.ok("POST", "/v1/admin/tokens", json={"user_ids": users}))["tokens"]
    for u in users:
        history = (await api.as_user(tokens[u], "GET", f"/v1/conversations/d:{u}:system/messages")).json()
        assert "items" in history, history
        assert [m["body"]["text"] for m in history["items"]] == ["before and after"], u
