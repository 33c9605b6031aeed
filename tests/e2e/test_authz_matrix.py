"""The authorisation matrix: every REST operation of the live server's /openapi.json and every WebSocket client
frame (``ClientFrame``), against each principal that must be refused: no credentials, an expired token, a banned
user, a user token on an admin endpoint, a read-scope admin key on a write, and, for operations on a resource,
a non-member, a removed member and a user acting on another user's resource. Each refusal has the code
docs/protocol.md gives it, and changes nothing: a snapshot of everything a member, the acting users and the
admin can see (conversation lists, histories, group, members, mutes, invites, join requests, profiles, blocks,
devices, reports, media, webhooks, keys, bans, rules...) is the same after every refused write.

An operation without a row here fails ``test_every_operation_has_a_row``: a new endpoint must say how it is
guarded. One server serves the whole module; the principals and resources are made once."""

from __future__ import annotations

import base64
import json
import time
import typing
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import jwt
import pytest

from flare_im.protocol.frames import ClientFrame

from .conftest import RawWs, ServerProcess, raw_connect

Auth = Literal["public", "bearer", "admin", "signed"]
PASSWORD = "correct horse battery"
USERS = ("alice", "bob", "carol", "dave", "eve", "mallory")
# alice owns group "team" (bob and mallory members; carol removed; dave never a member); eve holds an expired
# token; mallory is banned. bob is a member acting on alice's resources.
GID = "team"
CONV = "g:team"
DM = "d:alice:bob"


@dataclass
class World:
    srv: ServerProcess
    http: httpx.Client
    tokens: dict[str, str]
    expired: str  # eve's, correctly signed, past its exp
    read_key: str  # an admin key of scope read
    read_key_id: str = ""
    ids: dict[str, Any] = field(default_factory=dict)
    openapi: dict[str, Any] = field(default_factory=dict)

    def as_user(self, uid: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[uid]}"}

    def admin_headers(self) -> dict[str, str]:
        return {"X-Admin-Key": self.srv.admin_key}

    def ok(self, method: str, path: str, who: str | None = None, **kw: Any) -> Any:
        headers = self.admin_headers() if who is None else self.as_user(who)
        reply = self.http.request(method, path, headers=headers, **kw)
        assert reply.status_code < 400, f"{method} {path}: {reply.status_code} {reply.text}"
        return reply.json() if reply.content else None


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None


@dataclass(frozen=True)
class Row:
    """How one operation is guarded. ``scoped``: the code each resource principal gets (``outsider``: never a
    member; ``removed``: a removed member; ``other``: a member acting on another user's resource). ``why``: why
    a principal the matrix would try is not refused (a public endpoint, or one only about the caller)."""

    auth: Auth
    build: Callable[[World, str], Call]
    scoped: dict[str, int] = field(default_factory=dict)
    why: str = ""


def c(method: str, path: str, **kw: Any) -> Callable[[World, str], Call]:
    """A call whose ``path`` and string values may name the world's ids as ``{name}``; ``{conv}`` and
    ``{alice_seq}`` are the group and alice's message in it, or in the direct conversation ``conv=DM``."""

    def build(w: World, conv: str = CONV) -> Call:
        fill = {**w.ids, "gid": GID, "conv": conv, "dm": DM}
        if conv == DM:
            fill["alice_seq"] = w.ids["dm_seq"]
        body = _fill(kw.get("json"), fill)
        return Call(method, path.format(**fill), _fill(kw.get("params"), fill), body, kw.get("content"))

    return build


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


WHO = {"outsider": "dave", "removed": "carol", "other": "bob"}
ME = "only about the caller's own account: no other user's resource to reach"
MEMBER = {"outsider": 403, "removed": 403}
MODERATOR = {"outsider": 403, "removed": 403, "other": 403}  # bob is a plain member: not the owner or an admin


def op(name: str, **fields: Any) -> dict[str, Any]:
    return {"op": name, "opid": uuid.uuid4().hex, **fields}


ROWS: dict[str, Row] = {
    # Public: nothing to authorise (the service's state, or the credentials themselves are what is checked).
    "GET /healthz": Row("public", c("GET", "/healthz"), why="liveness probe"),
    "GET /v1/gateways": Row("public", c("GET", "/v1/gateways"), why="where to connect"),
    "GET /v1/push/vapid": Row("public", c("GET", "/v1/push/vapid"), why="the server's public key"),
    "POST /v1/auth/register": Row("public", c("POST", "/v1/auth/register"), why="credentials are the body"),
    "POST /v1/auth/login": Row("public", c("POST", "/v1/auth/login"), why="credentials are the body"),
    "POST /v1/auth/refresh": Row("public", c("POST", "/v1/auth/refresh"), why="credentials are the body"),
    # Capabilities: the upload token of a presign answer, the signature of a media URL.
    "PUT /v1/media/{media_id}/parts/{number}": Row(
        "signed", c("PUT", "/v1/media/{pending_media}/parts/1", content=b"x" * 64)
    ),
    "GET /v1/media/{media_id}/content": Row(
        "signed", c("GET", "/v1/media/{media_id}/content", params={"v": "orig", "exp": "9999999999", "sig": "A" * 43})
    ),
    # The caller's own account.
    "POST /v1/auth/logout": Row("bearer", c("POST", "/v1/auth/logout", json={"everywhere": True}), why=ME),
    "GET /v1/me": Row("bearer", c("GET", "/v1/me"), why=ME),
    "PATCH /v1/me": Row("bearer", c("PATCH", "/v1/me", json={"display_name": "pwned"}), why=ME),
    "GET /v1/users": Row("bearer", c("GET", "/v1/users", params={"ids": "alice,bob"}), why="profiles are public"),
    "GET /v1/me/devices": Row("bearer", c("GET", "/v1/me/devices"), why=ME),
    "PUT /v1/me/devices/{device}/push": Row(
        "bearer",
        c("PUT", "/v1/me/devices/d9/push", json={"provider": "fcm", "token": "t" * 40}),
        why=ME,
    ),
    "DELETE /v1/me/devices/{device}/push": Row("bearer", c("DELETE", "/v1/me/devices/d1/push"), why=ME),
    "GET /v1/me/notifications": Row("bearer", c("GET", "/v1/me/notifications"), why=ME),
    "PATCH /v1/me/notifications": Row("bearer", c("PATCH", "/v1/me/notifications", json={"mode": "none"}), why=ME),
    "GET /v1/me/notifications/history": Row("bearer", c("GET", "/v1/me/notifications/history"), why=ME),
    "GET /v1/me/blocks": Row("bearer", c("GET", "/v1/me/blocks"), why=ME),
    "PUT /v1/me/blocks/{user_id}": Row("bearer", c("PUT", "/v1/me/blocks/bob"), why=ME),
    "DELETE /v1/me/blocks/{user_id}": Row("bearer", c("DELETE", "/v1/me/blocks/dave"), why=ME),
    "GET /v1/me/reports": Row("bearer", c("GET", "/v1/me/reports"), why=ME),
    "GET /v1/conversations": Row("bearer", c("GET", "/v1/conversations"), why="the caller's own list"),
    "POST /v1/groups": Row("bearer", c("POST", "/v1/groups", json={"name": "x", "members": ["alice"]}), why=ME),
    "GET /v1/search": Row("bearer", c("GET", "/v1/search", params={"q": "hello", "conv": CONV}), scoped=MEMBER),
    # Media: the uploader's, or a member's who can read a message that sent it.
    "POST /v1/media": Row(
        "bearer", c("POST", "/v1/media", params={"kind": "file", "name": "a.txt"}, content=b"hello"), why=ME
    ),
    "POST /v1/media:presign": Row(
        "bearer", c("POST", "/v1/media:presign", json={"kind": "file", "size": 10, "name": "b.txt"}), why=ME
    ),
    "POST /v1/media:complete": Row(
        "bearer",
        c("POST", "/v1/media:complete", json={"media_id": "{pending_media}", "parts": [{"number": 1, "etag": "x"}]}),
        scoped={"other": 403},
    ),
    "GET /v1/media/{media_id}": Row("bearer", c("GET", "/v1/media/{media_id}"), scoped={"other": 403}),
    "GET /v1/media/{media_id}/download": Row(
        "bearer", c("GET", "/v1/media/{media_id}/download"), scoped={"other": 403}
    ),
    "DELETE /v1/media/{media_id}": Row("bearer", c("DELETE", "/v1/media/{media_id}"), scoped={"other": 404}),
    # Reports: of a message the caller can read.
    "POST /v1/reports": Row(
        "bearer", c("POST", "/v1/reports", json={"conv": CONV, "seq": "{alice_seq}", "reason": "spam"}), scoped=MEMBER
    ),
    # Groups.
    "GET /v1/groups/{gid}": Row("bearer", c("GET", "/v1/groups/{gid}"), scoped=MEMBER),
    "PATCH /v1/groups/{gid}": Row("bearer", c("PATCH", "/v1/groups/{gid}", json={"name": "mine"}), scoped=MODERATOR),
    "GET /v1/groups/{gid}/members": Row("bearer", c("GET", "/v1/groups/{gid}/members"), scoped=MEMBER),
    "POST /v1/groups/{gid}/members": Row(
        "bearer", c("POST", "/v1/groups/{gid}/members", json={"user_ids": ["dave", "carol"]}), scoped=MODERATOR
    ),
    "DELETE /v1/groups/{gid}/members/{member}": Row(
        "bearer", c("DELETE", "/v1/groups/{gid}/members/mallory"), scoped=MODERATOR
    ),
    "POST /v1/groups/{gid}/leave": Row("bearer", c("POST", "/v1/groups/{gid}/leave"), scoped=MEMBER),
    "PUT /v1/groups/{gid}/members/{member}/role": Row(
        "bearer", c("PUT", "/v1/groups/{gid}/members/mallory/role", json={"role": "admin"}), scoped=MODERATOR
    ),
    "GET /v1/groups/{gid}/mutes": Row("bearer", c("GET", "/v1/groups/{gid}/mutes"), scoped=MEMBER),
    "PUT /v1/groups/{gid}/mutes/{user_id}": Row(
        "bearer", c("PUT", "/v1/groups/{gid}/mutes/mallory", json={"duration_s": 60}), scoped=MODERATOR
    ),
    "DELETE /v1/groups/{gid}/mutes/{user_id}": Row(
        "bearer", c("DELETE", "/v1/groups/{gid}/mutes/bob"), scoped=MODERATOR
    ),
    "PUT /v1/groups/{gid}/mute-all": Row("bearer", c("PUT", "/v1/groups/{gid}/mute-all", json={}), scoped=MODERATOR),
    "DELETE /v1/groups/{gid}/mute-all": Row("bearer", c("DELETE", "/v1/groups/{gid}/mute-all"), scoped=MODERATOR),
    "POST /v1/groups/{gid}/invites": Row(
        "bearer", c("POST", "/v1/groups/{gid}/invites", json={"max_uses": 5}), scoped=MODERATOR
    ),
    "GET /v1/groups/{gid}/invites": Row("bearer", c("GET", "/v1/groups/{gid}/invites"), scoped=MODERATOR),
    "DELETE /v1/groups/{gid}/invites/{code}": Row(
        "bearer", c("DELETE", "/v1/groups/{gid}/invites/{group_invite}"), scoped=MODERATOR
    ),
    "GET /v1/invites/{code}": Row(
        "bearer", c("GET", "/v1/invites/{group_invite}"), why="an invite link is for whoever holds it"
    ),
    "POST /v1/invites/{code}/join": Row(
        "bearer", c("POST", "/v1/invites/{group_invite}/join", json={"note": "me"}), why="joining is its purpose"
    ),
    "GET /v1/groups/{gid}/join-requests": Row("bearer", c("GET", "/v1/groups/{gid}/join-requests"), scoped=MODERATOR),
    "POST /v1/groups/{gid}/join-requests/{user_id}": Row(
        "bearer", c("POST", "/v1/groups/{gid}/join-requests/eve", json={"approve": True}), scoped=MODERATOR
    ),
    # Conversations.
    "GET /v1/conversations/{conv}/messages": Row(
        "bearer", c("GET", "/v1/conversations/{conv}/messages"), scoped=MEMBER
    ),
    "POST /v1/conversations/{conv}/messages": Row(
        "bearer",
        c("POST", "/v1/conversations/{conv}/messages", json={"cmid": "intruder-1", "body": {"text": "in"}}),
        scoped=MEMBER,
    ),
    "POST /v1/conversations/{conv}/messages/{seq}/ops": Row(
        "bearer",
        c(
            "POST",
            "/v1/conversations/{conv}/messages/{alice_seq}/ops",
            json={"op": "edit", "opid": "intruder-op", "base_version": 1, "body": {"text": "changed"}},
        ),
        scoped=MODERATOR,
    ),
    "GET /v1/conversations/{conv}/messages/{seq}/revisions": Row(
        "bearer", c("GET", "/v1/conversations/{conv}/messages/{alice_seq}/revisions"), scoped=MEMBER
    ),
    "POST /v1/conversations/{conv}/forward": Row(
        "bearer",
        c("POST", "/v1/conversations/{conv}/forward", json={"seqs": ["{alice_seq}"], "to": DM, "cmid": "intruder-f"}),
        scoped=MEMBER,
    ),
    "GET /v1/conversations/{conv}/messages/{seq}/readers": Row(
        "bearer", c("GET", "/v1/conversations/{conv}/messages/{alice_seq}/readers"), scoped=MEMBER
    ),
    "PATCH /v1/conversations/{conv}/settings": Row(
        "bearer", c("PATCH", "/v1/conversations/{conv}/settings", json={"pinned": True}), scoped=MEMBER
    ),
    "POST /v1/conversations/{conv}/read": Row(
        "bearer", c("POST", "/v1/conversations/{conv}/read", json={"seq": 1}), scoped=MEMBER
    ),
}

# Admin endpoints: each with a call that would change something (or read something private) were it let through.
_ADMIN: list[tuple[str, Callable[[World, str], Call]]] = [
    ("POST /v1/admin/users", c("POST", "/v1/admin/users", json={"user_id": "zed"})),
    ("POST /v1/admin/users:batch", c("POST", "/v1/admin/users:batch", json={"users": [{"user_id": "zed"}]})),
    ("POST /v1/admin/tokens", c("POST", "/v1/admin/tokens", json={"user_ids": ["alice"]})),
    ("POST /v1/admin/users/{user_id}/tokens", c("POST", "/v1/admin/users/alice/tokens")),
    ("POST /v1/admin/users/{user_id}/revoke", c("POST", "/v1/admin/users/alice/revoke")),
    ("GET /v1/admin/invites", c("GET", "/v1/admin/invites")),
    ("POST /v1/admin/invites", c("POST", "/v1/admin/invites", json={"max_uses": 3})),
    ("DELETE /v1/admin/invites/{invite_id}", c("DELETE", "/v1/admin/invites/{admin_invite}")),
    ("GET /v1/admin/push/stats", c("GET", "/v1/admin/push/stats")),
    ("GET /v1/admin/push/jobs", c("GET", "/v1/admin/push/jobs")),
    ("POST /v1/admin/media/{media_id}:block", c("POST", "/v1/admin/media/{media_id}:block", json={"reason": "x"})),
    ("GET /v1/admin/webhooks", c("GET", "/v1/admin/webhooks")),
    (
        "POST /v1/admin/webhooks",
        c("POST", "/v1/admin/webhooks", json={"url": "http://127.0.0.1:9/h", "events": ["after_send"]}),
    ),
    ("GET /v1/admin/webhooks/{endpoint_id}", c("GET", "/v1/admin/webhooks/{webhook}")),
    ("PATCH /v1/admin/webhooks/{endpoint_id}", c("PATCH", "/v1/admin/webhooks/{webhook}", json={"enabled": True})),
    ("DELETE /v1/admin/webhooks/{endpoint_id}", c("DELETE", "/v1/admin/webhooks/{webhook}")),
    ("GET /v1/admin/webhooks/{endpoint_id}/deliveries", c("GET", "/v1/admin/webhooks/{webhook}/deliveries")),
    ("POST /v1/admin/webhooks/{endpoint_id}/replay", c("POST", "/v1/admin/webhooks/{webhook}/replay", json={})),
    ("GET /v1/admin/moderation/spam/domains", c("GET", "/v1/admin/moderation/spam/domains")),
    (
        "PUT /v1/admin/moderation/spam/domains/{domain}",
        c("PUT", "/v1/admin/moderation/spam/domains/evil.example", json={"policy": "allow"}),
    ),
    ("DELETE /v1/admin/moderation/spam/domains/{domain}", c("DELETE", "/v1/admin/moderation/spam/domains/bad.example")),
    ("GET /v1/admin/moderation/spam/decisions", c("GET", "/v1/admin/moderation/spam/decisions")),
    ("GET /v1/admin/moderation/spam/mutes", c("GET", "/v1/admin/moderation/spam/mutes")),
    ("DELETE /v1/admin/moderation/spam/mutes/{user_id}", c("DELETE", "/v1/admin/moderation/spam/mutes/dave")),
    ("GET /v1/admin/moderation/reports", c("GET", "/v1/admin/moderation/reports")),
    ("GET /v1/admin/moderation/reports/{report_id}", c("GET", "/v1/admin/moderation/reports/{report}")),
    (
        "POST /v1/admin/moderation/reports/{report_id}/resolve",
        c("POST", "/v1/admin/moderation/reports/{report}/resolve", json={"action": "dismiss"}),
    ),
    ("PUT /v1/admin/groups/{gid}/limit", c("PUT", "/v1/admin/groups/{gid}/limit", json={"max_members": 2})),
    ("POST /v1/admin/users/{user_id}/ban", c("POST", "/v1/admin/users/bob/ban", json={"reason": "x"})),
    ("DELETE /v1/admin/users/{user_id}/ban", c("DELETE", "/v1/admin/users/mallory/ban")),
    ("GET /v1/admin/bans", c("GET", "/v1/admin/bans")),
    ("POST /v1/admin/users/{user_id}/kick", c("POST", "/v1/admin/users/alice/kick")),
    ("POST /v1/admin/users/{user_id}/devices/{device}/kick", c("POST", "/v1/admin/users/alice/devices/d1/kick")),
    ("DELETE /v1/admin/users/{user_id}", c("DELETE", "/v1/admin/users/bob", params={"messages": "recall"})),
    ("POST /v1/admin/broadcasts", c("POST", "/v1/admin/broadcasts", json={"text": "hi", "user_ids": ["alice"]})),
    ("GET /v1/admin/broadcasts", c("GET", "/v1/admin/broadcasts")),
    ("GET /v1/admin/broadcasts/{broadcast_id}", c("GET", "/v1/admin/broadcasts/{broadcast}")),
    ("GET /v1/admin/stats", c("GET", "/v1/admin/stats")),
    ("GET /v1/admin/stats/daily-active", c("GET", "/v1/admin/stats/daily-active")),
    ("GET /v1/admin/audit", c("GET", "/v1/admin/audit")),
    ("GET /v1/admin/keys", c("GET", "/v1/admin/keys")),
    ("POST /v1/admin/keys", c("POST", "/v1/admin/keys", json={"scope": "full"})),
    ("DELETE /v1/admin/keys/{key_id}", c("DELETE", "/v1/admin/keys/{read_key_id}")),
    ("GET /v1/admin/filter/rules", c("GET", "/v1/admin/filter/rules")),
    ("POST /v1/admin/filter/rules", c("POST", "/v1/admin/filter/rules", json={"pattern": "hello"})),
    ("PUT /v1/admin/filter/rules/{rule_id}", c("PUT", "/v1/admin/filter/rules/{rule}", json={"pattern": "hello"})),
    ("DELETE /v1/admin/filter/rules/{rule_id}", c("DELETE", "/v1/admin/filter/rules/{rule}")),
    ("POST /v1/admin/filter/check", c("POST", "/v1/admin/filter/check", json={"text": "hello"})),
]
ROWS.update({name: Row("admin", build) for name, build in _ADMIN})


# ---------------------------------------------------------------------------------------------- the world


def _expired(token: str, secret: str) -> str:
    """``token`` signed again with its exp an hour ago."""
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 3600
    return jwt.encode(
        claims, secret, algorithm=header["alg"], headers={"kid": header["kid"]} if "kid" in header else None
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("authz")) / "data")
    srv.start()
    http = httpx.Client(base_url=srv.api_url, timeout=10)
    try:
        admin = {"X-Admin-Key": srv.admin_key}
        http.post("/v1/admin/users:batch", headers=admin, json={"users": [{"user_id": u} for u in USERS]})
        tokens = http.post("/v1/admin/tokens", headers=admin, json={"user_ids": list(USERS)}).json()["tokens"]
        expired = _expired(tokens["eve"], (srv.data_dir / "jwt.secret").read_text().strip())
        key = http.post("/v1/admin/keys", headers=admin, json={"scope": "read"}).json()
        w = World(srv, http, tokens, expired, key["key"], key["key_id"])
        w.ids["read_key_id"] = key["key_id"]
        w.openapi = http.get("/openapi.json").json()
        w.ids["moderation_key"] = http.post("/v1/admin/keys", headers=admin, json={"scope": "moderation"}).json()["key"]
        w.ok(
            "POST",
            "/v1/groups",
            "alice",
            json={"name": "team", "group_id": GID, "members": ["bob", "carol", "mallory"]},
        )
        msg = {"cmid": "m1", "body": {"text": "hello team"}}
        w.ids["alice_seq"] = w.ok("POST", f"/v1/conversations/{CONV}/messages", "alice", json=msg)["seq"]
        w.ok("POST", f"/v1/conversations/{CONV}/messages", "bob", json={"cmid": "m2", "body": {"text": "hi"}})
        w.ok("POST", f"/v1/conversations/{CONV}/messages", "mallory", json={"cmid": "m3", "body": {"text": "yo"}})
        dm = w.ok("POST", f"/v1/conversations/{DM}/messages", "alice", json={"cmid": "m4", "body": {"text": "psst"}})
        w.ids["dm_seq"] = dm["seq"]
        w.ok("DELETE", f"/v1/groups/{GID}/members/carol", "alice")
        w.ok("PUT", f"/v1/groups/{GID}/mutes/bob", "alice", json={"duration_s": 3600})
        invite = w.ok("POST", f"/v1/groups/{GID}/invites", "alice", json={"approval": True})
        w.ids["group_invite"] = invite["code"]
        w.ok("POST", f"/v1/invites/{invite['code']}/join", "eve", json={"note": "let me in"})  # pending
        w.ok("PUT", "/v1/me/blocks/dave", "alice")
        w.ok("PUT", "/v1/me/blocks/dave", "bob")
        media = w.ok("POST", "/v1/media", "alice", params={"kind": "file", "name": "a.txt"}, content=b"alice's file")
        w.ids["media_id"] = media["media_id"]
        pending = w.ok("POST", "/v1/media:presign", "alice", json={"kind": "file", "size": 100, "name": "p.txt"})
        w.ids["pending_media"] = pending["media_id"]
        report = w.ok("POST", "/v1/reports", "alice", json={"user_id": "mallory", "reason": "spam"})
        w.ids["report"] = report["report_id"]
        w.ids["admin_invite"] = w.ok("POST", "/v1/admin/invites", json={"max_uses": 2})["invite_id"]
        hook = w.ok(
            "POST",
            "/v1/admin/webhooks",
            json={"url": "http://127.0.0.1:9/h", "events": ["after_send"], "enabled": False},
        )
        w.ids["webhook"] = hook["endpoint_id"]
        w.ids["rule"] = w.ok("POST", "/v1/admin/filter/rules", json={"pattern": "forbiddenword"})["rule_id"]
        w.ok("PUT", "/v1/admin/moderation/spam/domains/bad.example", json={"policy": "deny"})
        broadcast = w.ok("POST", "/v1/admin/broadcasts", json={"text": "welcome", "user_ids": ["alice"]})
        w.ids["broadcast"] = broadcast["broadcast_id"]
        deadline = time.monotonic() + 10
        while w.ok("GET", f"/v1/admin/broadcasts/{broadcast['broadcast_id']}")["state"] != "done":
            assert time.monotonic() < deadline, "the broadcast did not finish"
            time.sleep(0.05)
        w.ids["mallory_before_ban"] = _views(w, own_views("mallory"))
        rita = http.post("/v1/auth/register", json={"username": "rita", "password": PASSWORD}).json()
        w.ids["rita_refresh"] = rita["refresh_token"]
        w.ok("POST", "/v1/admin/users/rita/ban", json={"reason": "spam"})
        w.ok("POST", "/v1/admin/users/mallory/ban", json={"reason": "spam"})
        yield w
    finally:
        http.close()
        srv.stop()


# Everything that a refused request could change, as the admin, the owner, a member and each acting user see it.
_VOLATILE = {"url", "thumb_url", "expires_at", "server_ts"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def own_views(who: str) -> list[tuple[str | None, str, dict[str, Any] | None]]:
    return [
        (who, "/v1/me", None),
        (who, "/v1/conversations", {"limit": 500}),
        (who, "/v1/me/blocks", None),
        (who, "/v1/me/devices", None),
        (who, "/v1/me/reports", None),
        (who, "/v1/me/notifications", None),
    ]


def _views(w: World, views: list[tuple[str | None, str, dict[str, Any] | None]]) -> dict[str, Any]:
    with ThreadPoolExecutor(8) as pool:  # the GETs overlap: a snapshot is taken often
        replies = pool.map(lambda v: _strip(w.ok("GET", v[1], v[0], params=v[2])), views)
        return {f"{who or 'admin'} {path}": reply for (who, path, _), reply in zip(views, replies, strict=True)}


def snapshot(w: World) -> dict[str, Any]:
    views: list[tuple[str | None, str, dict[str, Any] | None]] = []
    for who in ("alice", "bob", "carol", "dave", "eve"):
        views += own_views(who)
    views += [
        ("alice", f"/v1/conversations/{CONV}/messages", {"limit": 500}),
        ("alice", f"/v1/conversations/{DM}/messages", {"limit": 500}),
        ("alice", f"/v1/groups/{GID}", None),
        ("alice", f"/v1/groups/{GID}/members", None),
        ("alice", f"/v1/groups/{GID}/mutes", None),
        ("alice", f"/v1/groups/{GID}/invites", None),
        ("alice", f"/v1/groups/{GID}/join-requests", None),
        ("alice", f"/v1/media/{w.ids['media_id']}", None),
        ("alice", "/v1/users", {"ids": ",".join(USERS)}),
        (None, "/v1/admin/bans", None),
        (None, "/v1/admin/keys", None),
        (None, "/v1/admin/invites", None),
        (None, "/v1/admin/webhooks", None),
        (None, "/v1/admin/filter/rules", None),
        (None, "/v1/admin/moderation/spam/domains", None),
        (None, "/v1/admin/moderation/spam/mutes", None),
        (None, "/v1/admin/moderation/reports", {"state": ""}),
        (None, "/v1/admin/broadcasts", None),
        (None, "/v1/admin/push/jobs", None),
    ]
    return _views(w, views)


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [f"{k}: {before[k]} -> {after[k]}" for k in before if before[k] != after[k]]


def _send(w: World, call: Call, headers: dict[str, str]) -> httpx.Response:
    return w.http.request(
        call.method, call.path, params=call.params, json=call.json, content=call.content, headers=headers
    )


Principal = tuple[str, dict[str, str], int, dict[str, Any] | None, str]


def _principals(w: World, row: Row, name: str) -> list[Principal]:
    """(name, headers, expected status, expected error detail, conversation) of each principal ``row``
    refuses: a user who was never a member is also refused in alice and bob's direct conversation."""
    method = name.split(" ")[0]
    if row.auth == "public":
        return []
    if row.auth == "signed":
        return [
            ("no upload token or signature", {}, 403, None, CONV),
            ("alice's bearer token", w.as_user("alice"), 403, None, CONV),
        ]
    if row.auth == "admin":
        out: list[Principal] = [
            ("no key", {}, 401, None, CONV),
            ("a user's bearer token", w.as_user("alice"), 401, None, CONV),
            ("a user's token as the key", {"X-Admin-Key": w.tokens["alice"]}, 401, None, CONV),
            ("a wrong key", {"X-Admin-Key": w.srv.admin_key + "x"}, 401, None, CONV),
        ]
        if method != "GET":
            out.append(("a read-scope key", {"X-Admin-Key": w.read_key}, 403, None, CONV))
        if method != "GET" and not _moderation_may(name):
            out.append(("a moderation-scope key", {"X-Admin-Key": w.ids["moderation_key"]}, 403, None, CONV))
        return out
    out = [
        ("no token", {}, 401, None, CONV),
        ("an expired token", {"Authorization": f"Bearer {w.expired}"}, 401, None, CONV),
        ("a malformed token", {"Authorization": "Bearer not.a.jwt"}, 401, None, CONV),
        ("a forged signature", {"Authorization": f"Bearer {_forged(w)}"}, 401, None, CONV),
        ("a banned user", w.as_user("mallory"), 401, {"banned": True}, CONV),
    ]
    for principal, code in row.scoped.items():
        out.append((f"{principal} ({WHO[principal]})", w.as_user(WHO[principal]), code, None, CONV))
        if principal == "outsider" and "{conv}" in name:
            out.append(("outsider (dave) in alice and bob's direct conversation", w.as_user("dave"), code, None, DM))
    return out


# What a moderation-scope key may call besides every GET (the table of operations.md "Keys and scopes").
_MODERATION = {
    "POST /v1/admin/users/{user_id}/ban",
    "DELETE /v1/admin/users/{user_id}/ban",
    "POST /v1/admin/users/{user_id}/kick",
    "POST /v1/admin/users/{user_id}/devices/{device}/kick",
    "POST /v1/admin/users/{user_id}/revoke",
    "POST /v1/admin/media/{media_id}:block",
}
_MODERATION_UNDER = ("/v1/admin/filter/", "/v1/admin/moderation/")


def _moderation_may(name: str) -> bool:
    return name in _MODERATION or name.split(" ", 1)[1].startswith(_MODERATION_UNDER)


def _forged(w: World) -> str:
    """alice's token with a signature of the right length that the server never made."""
    return w.tokens["alice"].rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(b"x" * 32).decode().rstrip("=")


def test_every_operation_has_a_row(world: World) -> None:
    doc = world.openapi
    operations = {
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert operations - ROWS.keys() == set(), "operations without an authorisation row"
    assert ROWS.keys() - operations == set(), "rows of operations the server does not have"
    for name, row in ROWS.items():
        security = {
            s
            for req in doc["paths"][name.split(" ", 1)[1]][name.split(" ")[0].lower()].get("security", [])
            for s in req
        }
        expected = {"bearer": {"bearer"}, "admin": {"adminKey"}, "public": set(), "signed": set()}[row.auth]
        assert security == expected, f"{name}: the OpenAPI document says {security}, the matrix {row.auth}"
        assert row.scoped or row.why or row.auth in ("admin", "signed"), f"{name}: no decision about resources"


@pytest.mark.parametrize("name", sorted(n for n, r in ROWS.items() if r.auth != "public"))
async def test_refused_and_nothing_changed(world: World, name: str) -> None:
    row = ROWS[name]
    method = name.split(" ")[0]
    principals = _principals(world, row, name)
    path = name.split(" ", 1)[1]
    documented = world.openapi["paths"][path][method.lower()]["responses"]
    for principal, _, status, _, _ in principals:
        assert str(status) in documented, f"{name}: {status} for {principal} is not in its OpenAPI responses"
    write = method != "GET"
    watch = await _watch(world) if write else None
    before = snapshot(world) if write else None
    for principal, headers, status, detail, conv in principals:
        reply = _send(world, row.build(world, conv), headers)
        assert reply.status_code == status, f"{name} as {principal}: {reply.status_code} {reply.text}"
        error = reply.json()["error"]
        assert (error["code"], error["retryable"]) == (status, False), error
        if detail is not None:
            assert {k: error.get("detail", {}).get(k) for k in detail} == detail, error
        if principal == "an expired token":  # refused for its exp, not for a signature this test got wrong
            assert error["message"] == "token expired", error
    if before is not None:
        changes = _differences(before, snapshot(world))
        tried = ", ".join(p[0] for p in principals)
        assert not changes, f"{name} was refused to {tried} but changed: " + "; ".join(changes)
    if watch is not None:
        await _no_push(world, watch)


# ---------------------------------------------------------------------------------------------- WebSocket

FRAME_TAGS = {t.__struct_config__.tag for t in typing.get_args(ClientFrame)}


def frame(tag: str, conv: str, seq: int) -> dict[str, Any]:
    """A valid client frame of each type, aimed at ``conv`` (message ``seq``) where it names one."""
    opid = uuid.uuid4().hex
    samples: dict[str, dict[str, Any]] = {
        "auth": {"token": "x", "device": "d"},
        "send": {"conv": conv, "cmid": opid, "body": {"text": "let me in"}},
        "delivered": {"conv": conv, "seq": seq},
        "read": {"conv": conv, "seq": seq},
        "sync": {},
        "pull": {"conv": conv},
        "ping": {},
        "readers": {"conv": conv, "seq": seq},
        "settings": {"conv": conv, "pinned": True, "draft": "mine"},
        "presence": {"users": ["alice"]},
        "typing": {"conv": conv},
        "op": {"conv": conv, "op": "edit", "target": seq, "opid": opid, "base_version": 1, "body": {"text": "x"}},
        "forward": {"conv": conv, "seqs": [seq], "to": conv, "cmid": opid},
    }
    return {"type": tag, "id": 7, **samples[tag]}


# How each frame is scoped: the principals refused, with their code, or why none is.
WS_SCOPED: dict[str, dict[str, int] | str] = {
    "auth": "the authentication itself (test_ws_auth_refused)",
    "sync": "the caller's own conversation list",
    "ping": "no resource",
    "presence": "any user may watch any user (protocol.md §3 presence)",
    "send": MEMBER,
    "delivered": MEMBER,
    "read": MEMBER,
    "pull": MEMBER,
    "readers": MEMBER,
    "settings": MEMBER,
    "typing": MEMBER,
    "op": MODERATOR,
    "forward": MEMBER,
}


def test_every_client_frame_has_a_decision() -> None:
    assert set(WS_SCOPED) == FRAME_TAGS


async def _connect(w: World, token: str, device: str) -> tuple[RawWs, dict[str, Any]]:
    ws = await raw_connect(w.srv.ws_url)
    ws.send_text(json.dumps({"type": "auth", "id": 1, "token": token, "device": device}))
    return ws, await ws.recv_json()


async def _watch(w: World) -> RawWs:
    """alice's socket: she is in both conversations, so a push a refused frame caused would reach her."""
    ws, reply = await _connect(w, w.tokens["alice"], f"watch-{uuid.uuid4().hex[:8]}")
    assert reply["type"] == "auth_ok", reply
    return ws


async def _no_push(w: World, ws: RawWs) -> int:
    """The next frame on alice's socket is a message she sends now: nothing was pushed to her before it."""
    ack = w.ok(
        "POST", f"/v1/conversations/{CONV}/messages", "alice", json={"cmid": uuid.uuid4().hex, "body": {"text": "."}}
    )
    pushed = await ws.recv_json()
    assert (pushed["type"], pushed.get("seq")) == ("msg", ack["seq"]), f"a refused frame pushed {pushed}"
    return int(ack["seq"])


@pytest.mark.parametrize("tag", sorted(FRAME_TAGS - {"auth"}))
async def test_ws_frame_before_auth_closes_4003(world: World, tag: str) -> None:
    watch = await _watch(world)
    before = snapshot(world)
    ws = await raw_connect(world.srv.ws_url)
    ws.send_text(json.dumps(frame(tag, CONV, world.ids["alice_seq"])))
    assert await ws.wait_closed() == 4003
    assert _differences(before, snapshot(world)) == []
    await _no_push(world, watch)


@pytest.mark.parametrize("principal", ["no token", "expired", "malformed", "a forged signature", "banned"])
async def test_ws_auth_refused(world: World, principal: str) -> None:
    token = {
        "no token": "",
        "expired": world.expired,
        "malformed": "not.a.jwt",
        "a forged signature": _forged(world),
        "banned": world.tokens["mallory"],
    }[principal]
    ws, reply = await _connect(world, token, "d1")
    assert (reply["type"], reply["id"], reply["code"]) == ("error", 1, 401), reply
    if principal == "expired":
        assert reply["message"] == "token expired", reply
    if principal == "banned":
        assert (reply["detail"]["banned"], reply["detail"]["reason"]) == (True, "spam"), reply
    assert await ws.wait_closed() == (4010 if principal == "banned" else 4001)


SCOPED_CASES = [
    (tag, principal, code)
    for tag, decision in sorted(WS_SCOPED.items())
    if isinstance(decision, dict)
    for principal, code in decision.items()
]


@pytest.mark.parametrize(("tag", "principal", "code"), SCOPED_CASES)
async def test_ws_scoped_frame_refused(world: World, tag: str, principal: str, code: int) -> None:
    watch = await _watch(world)
    uid = WHO[principal]
    ws, reply = await _connect(world, world.tokens[uid], f"m-{uuid.uuid4().hex[:8]}")
    assert reply["type"] == "auth_ok", reply
    # The group; and for a user who was never a member, also someone else's direct conversation.
    targets = [(CONV, world.ids["alice_seq"])] + ([(DM, 1)] if principal == "outsider" else [])
    before = snapshot(world)
    for conv, seq in targets:
        ws.send_text(json.dumps(frame(tag, conv, seq)))
        error = await ws.recv_json()
        assert (error["type"], error.get("id"), error.get("code")) == ("error", 7, code), f"{tag} {conv}: {error}"
    changes = _differences(before, snapshot(world))
    assert not changes, f"{tag} refused to {uid} but changed: " + "; ".join(changes)
    barrier = await _no_push(world, watch)
    ws.send_text(json.dumps({"type": "ping", "id": 8}))  # the refusal did not close the connection
    reply = await ws.recv_json()
    if principal == "other":  # a member: the barrier reached it too, and nothing before it
        assert (reply["type"], reply.get("seq")) == ("msg", barrier), reply
        reply = await ws.recv_json()
    assert reply["type"] == "pong", reply


_HERS = ("read_seq", "pinned", "muted", "hidden", "draft", "cleared_seq", "kind")


def test_search_finds_only_what_the_caller_can_read(world: World) -> None:
    """Search without ``conv`` is not refused (it is scoped to the caller's conversations): a member finds the
    group's message, a user who was never a member and a removed member do not."""
    deadline = time.monotonic() + 10
    while not world.ok("GET", "/v1/search", "bob", params={"q": "hello"})["items"]:  # indexed asynchronously
        assert time.monotonic() < deadline, "the group's message was never indexed"
        time.sleep(0.05)
    for who in ("dave", "carol"):
        found = world.ok("GET", "/v1/search", who, params={"q": "hello"})["items"]
        assert found == [], f"{who} found messages it cannot read: {found}"


@pytest.mark.parametrize("transport", ["ws", "rest"])
async def test_sending_another_users_media_is_refused(world: World, transport: str) -> None:
    """A message may name only media its sender uploaded (§3 "Media"): bob naming alice's upload in their
    direct conversation is refused 403 and stores nothing."""
    watch = await _watch(world)
    before = snapshot(world)
    send = {"conv": DM, "cmid": uuid.uuid4().hex, "kind": "file", "body": {"media_id": world.ids["media_id"]}}
    if transport == "rest":
        reply = world.http.post(f"/v1/conversations/{DM}/messages", headers=world.as_user("bob"), json=send)
        assert reply.status_code == 403, reply.text
        error = reply.json()["error"]
    else:
        ws, ok = await _connect(world, world.tokens["bob"], f"m-{uuid.uuid4().hex[:8]}")
        assert ok["type"] == "auth_ok", ok
        ws.send_text(json.dumps({"type": "send", "id": 7, **send}))
        error = await ws.recv_json()
        assert (error["type"], error["code"]) == ("error", 403), error
    assert "uploader" in error["message"], error
    assert _differences(before, snapshot(world)) == []
    await _no_push(world, watch)


async def test_a_blocked_user_cannot_see_the_blockers_presence(world: World) -> None:
    """Presence is open to every user but across a block (§8b): pam and pia block quinn, so quinn's
    subscription answers pam (online) as never seen, and pia coming online pushes quinn nothing, while
    ursula's does (the barrier)."""
    fresh = ("pam", "pia", "quinn", "ursula")  # never online before: no offline debounce is pending
    world.ok("POST", "/v1/admin/users:batch", json={"users": [{"user_id": u} for u in fresh]})
    tokens = world.ok("POST", "/v1/admin/tokens", json={"user_ids": list(fresh)})["tokens"]
    for blocker in ("pam", "pia"):
        world.tokens[blocker] = tokens[blocker]
        world.ok("PUT", "/v1/me/blocks/quinn", blocker)
    await _connect(world, tokens["pam"], "p1")
    quinn, ok = await _connect(world, tokens["quinn"], "q1")
    assert ok["type"] == "auth_ok", ok
    quinn.send_text(json.dumps({"type": "presence", "id": 3, "users": ["pam", "pia", "ursula"]}))
    listed = await quinn.recv_json()
    assert [(i["user"], i["online"]) for i in listed["items"]] == [("pam", False), ("pia", False), ("ursula", False)]
    await _connect(world, tokens["pia"], "p2")
    await _connect(world, tokens["ursula"], "u1")
    pushed = await quinn.recv_json()
    assert (pushed["type"], pushed["user"], pushed["online"]) == ("presence", "ursula", True), pushed


@pytest.mark.parametrize("endpoint", ["login", "refresh"])
def test_a_banned_user_cannot_log_in_or_refresh(world: World, endpoint: str) -> None:
    """The public endpoints whose body is the credentials: a banned user's are refused 401 with the ban (rita
    registered with a password, then was banned)."""
    before = snapshot(world)
    body = (
        {"username": "rita", "password": PASSWORD}
        if endpoint == "login"
        else {"refresh_token": world.ids["rita_refresh"]}
    )
    reply = world.http.post(f"/v1/auth/{endpoint}", json=body)
    assert reply.status_code == 401, reply.text
    assert reply.json()["error"]["detail"] == {
        "banned": True,
        "reason": "spam",
        "since": reply.json()["error"]["detail"]["since"],
    }
    assert _differences(before, snapshot(world)) == []


def test_zz_the_banned_user_changed_nothing_of_its_own(world: World) -> None:
    """Last: the banned user's own state (which it cannot read while banned) is as before the ban, after every
    refused request above. Unbanning gives the account back as it was."""
    world.ok("DELETE", "/v1/admin/users/mallory/ban")
    before, after = world.ids["mallory_before_ban"], _views(world, own_views("mallory"))
    for views in (before, after):  # others' messages arrived since: keep what is hers (positions, settings)
        listing = views.pop("mallory /v1/conversations")["items"]
        views["mine"] = {i["conv"]: {k: i.get(k) for k in _HERS} for i in listing}
    assert _differences(before, after) == []
