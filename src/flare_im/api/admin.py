"""REST routes of admin operations (issue U8; docs/operations.md "Admin"): bans, kicks, deleting users, broadcasts,
statistics, the audit log and scoped admin keys; plus the scope check every admin endpoint goes through and the
audit of every mutating admin request."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flare_im.api import schemas as shapes
from flare_im.api.openapi import reply
from flare_im.api.schemas import UserPath
from flare_im.backends.admin.base import AdminKey, AdminStore, AuditEntry, Ban, Broadcast
from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError, forbidden, invalid, not_found
from flare_im.services.admin import AccountGate, AdminKeys, Principal, covers, required_scope
from flare_im.services.admin_stats import AdminStats
from flare_im.services.admin_users import AdminUsers
from flare_im.services.broadcast import Broadcaster

if TYPE_CHECKING:
    from flare_im.api.http import ApiContext

MAX_INT = 2**63 - 1
_AUDIT_DETAIL = 2000  # characters of a request body kept in the audit log


@dataclass(slots=True)
class AdminApi:
    keys: AdminKeys
    users: AdminUsers
    broadcaster: Broadcaster
    stats: AdminStats
    store: AdminStore
    gate: AccountGate

    async def authorize(self, request: Request, key: str | None) -> Principal:
        """The key's principal when its scope covers the request (401 unknown key, 403 scope too narrow)."""
        principal = await self.keys.identify(key)
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        request.state.admin = principal
        needed = required_scope(request.method, path)
        if not covers(principal.scope, needed):
            raise forbidden(f"this admin key's scope is {principal.scope}; {request.method} {path} needs {needed}")
        return principal


# ---------------------------------------------------------------------------- bodies and replies


class BanBody(BaseModel):
    reason: str = Field(default="", max_length=512, description="shown to the user's devices and at login")


class BroadcastBody(BaseModel):
    """Either ``user_ids`` or ``all: true``."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["user_ids"], "properties": {"all": {"const": False}, "user_ids": {"type": "array"}}},
                {"required": ["all"], "properties": {"all": {"const": True}}, "not": {"required": ["user_ids"]}},
            ]
        }
    )
    text: str = Field(min_length=1, max_length=4000)
    title: str = shapes.text(256, default="")
    user_ids: list[shapes.UserId] | None = Field(default=None, min_length=1, max_length=10_000)
    all: StrictBool = Field(default=False, description="every user (then user_ids must be left out)")


class KeyBody(BaseModel):
    scope: Literal["read", "moderation", "full"]
    note: str = shapes.text(256, default="")


class BanReply(BaseModel):
    user_id: str
    reason: str
    since: int
    by: str
    kicked: int = Field(default=0, description="connections closed on the node that answered")


class Bans(BaseModel):
    items: list[BanReply]


class Kicked(BaseModel):
    user_id: str
    kicked: int = Field(description="connections closed on the node that answered (other nodes close theirs too)")


class DeletedReply(BaseModel):
    user_id: str
    kicked: int
    recalled: int


class BroadcastReply(BaseModel):
    broadcast_id: str
    created_at: int
    by: str
    target: Literal["all", "list"]
    text: str
    title: str
    recipients: int
    delivered: int
    state: Literal["planning", "sending", "done"]


class BroadcastList(BaseModel):
    items: list[BroadcastReply]


class NodeStatsReply(BaseModel):
    node: str
    at: int
    connections: int
    users: int
    events: int
    events_per_s: float


class StatsReply(BaseModel):
    at: int
    online_users: int
    online_devices: int
    events_per_s: float
    active_conversations: int | None
    window_s: int
    nodes: list[NodeStatsReply]


class DailyActive(BaseModel):
    first: str
    last: str
    days: list[dict[str, Any]]
    distinct_users: int


class KeyReply(BaseModel):
    key_id: str
    scope: str
    note: str
    created_at: int
    created_by: str
    revoked_at: int
    key: str = Field(default="", description="the key itself: in the reply that creates it only")


class KeyList(BaseModel):
    items: list[KeyReply]


class AuditReply(BaseModel):
    entry_id: int
    ts: int
    key_id: str
    action: str
    target: str
    status: int
    detail: str
    ip: str


class AuditList(BaseModel):
    items: list[AuditReply]


def _ban(b: Ban, kicked: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"user_id": b.uid, "reason": b.reason, "since": b.created_at, "by": b.key_id}
    return out if kicked is None else out | {"kicked": kicked}


def _broadcast(b: Broadcast) -> dict[str, Any]:
    body = json.loads(b.body)
    return {
        "broadcast_id": b.broadcast_id,
        "created_at": b.created_at,
        "by": b.key_id,
        "target": b.target,
        "text": body.get("text", ""),
        "title": body.get("title", ""),
        "recipients": b.recipients,
        "delivered": b.delivered,
        "state": b.state,
    }


def _key(k: AdminKey, secret: str | None = None) -> dict[str, Any]:
    out = {
        "key_id": k.key_id,
        "scope": k.scope,
        "note": k.note,
        "created_at": k.created_at,
        "created_by": k.created_by,
        "revoked_at": k.revoked_at,
    }
    return out if secret is None else out | {"key": secret}


# ---------------------------------------------------------------------------- audit


class AuditMiddleware:
    """Records every mutating admin request that presented a valid key (refused ones too, with their status)
    before its reply goes out; reads (GET) are not recorded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith("/v1/admin/")
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
        ):
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < _AUDIT_DETAIL:
                body.extend(message.get("body", b"")[: _AUDIT_DETAIL - len(body)])
            return message

        async def auditing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._record(scope, bytes(body), int(message["status"]))
            await send(message)

        await self.app(scope, recording_receive, auditing_send)

    async def _record(self, scope: Scope, body: bytes, status: int) -> None:
        principal = scope.get("state", {}).get("admin")
        if not isinstance(principal, Principal):
            return  # no valid key: nothing was done in anyone's name
        api: AdminApi | None = getattr(scope["app"].state.ctx, "admin", None)
        if api is None:
            return
        route = scope.get("route")
        path = getattr(route, "path", scope["path"])
        params = scope.get("path_params") or {}
        query = scope.get("query_string", b"").decode("latin-1")
        target = "&".join(f"{k}={v}" for k, v in params.items())
        if query:
            target = f"{target}?{query}" if target else f"?{query}"
        client = scope.get("client")
        entry = AuditEntry(
            0,
            now_ms(),
            principal.key_id,
            f"{scope['method']} {path}",
            target,
            status,
            _redacted(body),
            client[0] if client else "",
        )
        await api.store.append_audit(entry)


# ---------------------------------------------------------------------------- routes


def install_admin_routes(app: FastAPI, ctx: ApiContext, admin: Any) -> None:
    """Adds the admin operations to ``app``; ``admin`` is the admin-key dependency. They answer 503 while
    ``ctx.admin`` is not set (a context without the admin store)."""
    app.add_middleware(AuditMiddleware)
    guarded = [Depends(admin)]

    def need() -> AdminApi:
        if ctx.admin is None:
            raise FlareError(ErrorCode.UNAVAILABLE, "admin operations are not available on this node")
        return ctx.admin

    @app.post(
        "/v1/admin/users/{user_id}/ban",
        tags=["admin"],
        dependencies=guarded,
        **reply(BanReply, ErrorCode.NOT_FOUND, ErrorCode.GONE),
    )
    async def ban_user(request: Request, user_id: UserPath, body: BanBody | None = None) -> dict[str, Any]:
        """Ban a user: every device is closed (4010, with the reason), login, refresh, REST calls and the
        WebSocket's auth are refused (401 with the reason) until unbanned. Nothing else changes."""
        principal: Principal = request.state.admin
        ban, kicked = await need().users.ban(user_id, (body or BanBody()).reason, principal.key_id)
        return _ban(ban, kicked)

    @app.delete(
        "/v1/admin/users/{user_id}/ban",
        tags=["admin"],
        status_code=204,
        dependencies=guarded,
        **reply(None, ErrorCode.NOT_FOUND),
    )
    async def unban_user(user_id: UserPath) -> None:
        """Lift a ban: the account works again as before (its tokens, groups and messages are as they were)."""
        await need().users.unban(user_id)

    @app.get("/v1/admin/bans", tags=["admin"], dependencies=guarded, **reply(Bans))
    async def list_bans() -> dict[str, Any]:
        return {"items": [_ban(b) for b in await need().store.bans() if b.kind == "banned"]}

    @app.post(
        "/v1/admin/users/{user_id}/kick",
        tags=["admin"],
        dependencies=guarded,
        **reply(Kicked, ErrorCode.NOT_FOUND, ErrorCode.GONE),
    )
    async def kick_user(user_id: UserPath) -> dict[str, Any]:
        """Close every connection of the user (4011); its tokens still work."""
        return {"user_id": user_id, "kicked": await need().users.kick(user_id, None)}

    @app.post(
        "/v1/admin/users/{user_id}/devices/{device}/kick",
        tags=["admin"],
        dependencies=guarded,
        **reply(Kicked, ErrorCode.NOT_FOUND, ErrorCode.GONE),
    )
    async def kick_device(user_id: UserPath, device: shapes.DevicePath) -> dict[str, Any]:
        """Close one device's connection (4011); the user's other devices stay connected."""
        return {"user_id": user_id, "kicked": await need().users.kick(user_id, device)}

    @app.delete(
        "/v1/admin/users/{user_id}",
        tags=["admin"],
        dependencies=guarded,
        **reply(DeletedReply, ErrorCode.NOT_FOUND, ErrorCode.GONE, (ErrorCode.FORBIDDEN, "The system user.")),
    )
    async def delete_user(
        request: Request, user_id: UserPath, messages: Annotated[Literal["recall", "keep"], Query()] = "keep"
    ) -> dict[str, Any]:
        """Delete an account: refused for good (4013 on its devices), tokens revoked, profile and credentials
        erased (the id stays taken). ``messages=recall`` recalls every message it sent; ``keep`` leaves them."""
        principal: Principal = request.state.admin
        done = await need().users.delete(user_id, recall=messages == "recall", key_id=principal.key_id)
        return {"user_id": done.uid, "kicked": done.kicked, "recalled": done.recalled}

    @app.post(
        "/v1/admin/broadcasts",
        tags=["admin"],
        status_code=202,
        dependencies=guarded,
        **reply(BroadcastReply, ErrorCode.NOT_FOUND),
    )
    async def broadcast(request: Request, body: BroadcastBody) -> dict[str, Any]:
        """A system notice to every user (``all: true``) or to ``user_ids``, delivered in the background at
        ``broadcast_rate_per_s`` per node; poll ``GET /v1/admin/broadcasts/{id}`` for progress."""
        if body.all == (body.user_ids is not None):
            raise invalid("give either user_ids or all: true")  # (the document's anyOf says so too)
        principal: Principal = request.state.admin
        started = await need().broadcaster.start(body.text, body.title, body.user_ids, principal.key_id)
        return _broadcast(started)

    @app.get("/v1/admin/broadcasts", tags=["admin"], dependencies=guarded, **reply(BroadcastList))
    async def list_broadcasts(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        return {"items": [_broadcast(b) for b in await need().store.broadcasts(limit)]}

    @app.get(
        "/v1/admin/broadcasts/{broadcast_id}",
        tags=["admin"],
        dependencies=guarded,
        **reply(BroadcastReply, ErrorCode.NOT_FOUND),
    )
    async def get_broadcast(broadcast_id: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
        found = await need().store.get_broadcast(broadcast_id)
        if found is None:
            raise not_found(f"no broadcast {broadcast_id!r}")
        return _broadcast(found)

    @app.get("/v1/admin/stats", tags=["admin"], dependencies=guarded, **reply(StatsReply))
    async def stats(window_s: Annotated[int, Query(ge=1, le=30 * 86400)] = 300) -> dict[str, Any]:
        """Online users and devices, connections per node, events (messages and operations) per second, and
        conversations with an event in the last ``window_s``."""
        return await need().stats.snapshot(window_s)

    @app.get("/v1/admin/stats/daily-active", tags=["admin"], dependencies=guarded, **reply(DailyActive))
    async def daily_active(
        first: Annotated[datetime.date, Query(alias="from", description="YYYY-MM-DD (UTC)")],
        last: Annotated[datetime.date, Query(alias="to", description="YYYY-MM-DD (UTC), inclusive")],
    ) -> dict[str, Any]:
        """Distinct users active per UTC day in the range, and distinct users over the whole range (none when
        ``to`` is before ``from``)."""
        lo, hi = first.isoformat(), last.isoformat()
        per_day, total = await need().stats.daily_active(lo, hi)
        days = [{"day": d, "users": per_day[d]} for d in sorted(per_day)]
        return {"first": lo, "last": hi, "days": days, "distinct_users": total}

    @app.get("/v1/admin/audit", tags=["admin"], dependencies=guarded, **reply(AuditList))
    async def audit(
        since: Annotated[int, Query(ge=0, le=MAX_INT, description="epoch ms")] = 0,
        until: Annotated[int, Query(ge=0, le=MAX_INT, description="epoch ms, exclusive")] = MAX_INT,
        key_id: Annotated[str | None, Query(max_length=64)] = None,
        before: Annotated[int, Query(ge=1, le=MAX_INT, description="entry_id: the next older page")] = MAX_INT,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Mutating admin requests, newest first: who (key id), what, on what, and the reply's status."""
        entries = await need().store.audit(since=since, until=until, key_id=key_id, before_id=before, limit=limit)
        return {"items": [_audit(e) for e in entries]}

    @app.post("/v1/admin/keys", tags=["admin"], status_code=201, dependencies=guarded, **reply(KeyReply))
    async def create_key(request: Request, body: KeyBody) -> dict[str, Any]:
        """A new admin key of ``scope`` (read, moderation, full). The ``key`` is in this reply only."""
        principal: Principal = request.state.admin
        key, secret = await need().keys.create(body.scope, body.note, principal.key_id)
        return _key(key, secret)

    @app.get("/v1/admin/keys", tags=["admin"], dependencies=guarded, **reply(KeyList))
    async def list_keys() -> dict[str, Any]:
        return {"items": [_key(k) for k in await need().keys.keys()]}

    @app.delete(
        "/v1/admin/keys/{key_id}",
        tags=["admin"],
        status_code=204,
        dependencies=guarded,
        **reply(None, ErrorCode.NOT_FOUND),
    )
    async def revoke_key(key_id: Annotated[str, Path(max_length=64)]) -> None:
        """Revoke a key: it is refused (401) from the next request on, on every node."""
        await need().keys.revoke(key_id)


_SECRET_FIELDS = ("secret", "password", "token", "key")


def _redacted(body: bytes) -> str:
    """The request body for the audit log, with the values of fields that may hold secrets replaced by "***"."""
    text = body.decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except ValueError:
        return text

    def scrub(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: "***" if any(w in str(k).lower() for w in _SECRET_FIELDS) else scrub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [scrub(x) for x in v]
        return v

    return json.dumps(scrub(value), ensure_ascii=False)


def _audit(e: AuditEntry) -> dict[str, Any]:
    return {
        "entry_id": e.entry_id,
        "ts": e.ts,
        "key_id": e.key_id,
        "action": e.action,
        "target": e.target,
        "status": e.status,
        "detail": e.detail,
        "ip": e.ip,
    }
