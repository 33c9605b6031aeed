"""The API gateway: REST over FastAPI (OpenAPI at /openapi.json, docs at /docs).

Errors are JSON ``{"error": {"code", "name", "message", "retryable"}}`` with the HTTP status equal to the
code of the protocol's error tree, so REST and WebSocket clients handle failures the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from flare_im.backends.relational.base import FilterRule, PushTarget, SettingsChange
from flare_im.protocol.errors import ErrorCode, FlareError, unauthorized
from flare_im.services.auth import AuthService, TokenPair
from flare_im.services.content_filter import ContentFilter, stored_if_filtered
from flare_im.services.devices import DeviceService
from flare_im.services.groups import GroupInfo, GroupService
from flare_im.services.operations import DELETE_FOR_ME, MessageOperations
from flare_im.services.router import MessageRouter
from flare_im.services.sync import SyncService
from flare_im.services.users import UserService


@dataclass(slots=True)
class ApiContext:
    auth: AuthService
    users: UserService
    groups: GroupService
    router: MessageRouter
    sync: SyncService
    operations: MessageOperations
    devices: DeviceService
    content_filter: ContentFilter
    ws_urls: list[str]


# ---------------------------------------------------------------------------- request bodies


class RegisterBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    display_name: str = Field(default="", max_length=128)


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class RefreshBody(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class AdminUserBody(BaseModel):
    user_id: str = Field(min_length=1, max_length=64)
    display_name: str = Field(default="", max_length=128)
    avatar: str = Field(default="", max_length=1024)


class AdminUsersBody(BaseModel):
    users: list[AdminUserBody] = Field(min_length=1, max_length=1000)


class AdminTokensBody(BaseModel):
    user_ids: list[str] = Field(min_length=1, max_length=1000)
    ttl_s: int | None = None


class AdminTokenBody(BaseModel):
    ttl_s: int | None = None


class ProfileBody(BaseModel):
    display_name: str | None = Field(default=None, max_length=128)
    avatar: str | None = Field(default=None, max_length=1024)


class GroupCreateBody(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    avatar: str = Field(default="", max_length=1024)
    members: list[str] = Field(default_factory=list, max_length=10_000)
    group_id: str | None = Field(default=None, max_length=64)


class GroupUpdateBody(BaseModel):
    name: str | None = Field(default=None, max_length=128)
    avatar: str | None = Field(default=None, max_length=1024)


class MembersBody(BaseModel):
    user_ids: list[str] = Field(min_length=1, max_length=1000)


class RoleBody(BaseModel):
    role: str


class SendBody(BaseModel):
    cmid: str = Field(min_length=1, max_length=64, description="client message id (idempotency key)")
    kind: str = Field(default="text", min_length=1, max_length=32)
    body: dict[str, Any]


class OpBody(BaseModel):
    op: Literal["recall", "delete", "edit", "react", "unreact", "delete_for_me"]
    opid: str = Field(min_length=1, max_length=64, description="operation id (a retried op applies once)")
    body: dict[str, Any] | None = Field(default=None, description="edit: the new body")
    base_version: int | None = Field(default=None, ge=1, description="edit: the version the edit is based on")
    emoji: str | None = Field(default=None, min_length=1, max_length=32, description="react / unreact")


class ForwardBody(BaseModel):
    seqs: list[int] = Field(min_length=1, max_length=100)
    to: str = Field(min_length=3, max_length=160, description="the conversation to forward into")
    cmid: str = Field(min_length=1, max_length=64)
    title: str = Field(default="", max_length=256)


class SettingsBody(BaseModel):
    pinned: bool | None = None
    muted: bool | None = None
    hidden: bool | None = None
    draft: str | None = Field(default=None, max_length=4096)
    clear_to: int | None = Field(default=None, ge=0, description="clear history for me up to this seq")


class ReadBody(BaseModel):
    seq: int = Field(ge=0)


class PushBody(BaseModel):
    provider: Literal["apns", "fcm", "webpush"]
    token: str = Field(min_length=1, max_length=4096, description="APNs/FCM token, or the Web Push endpoint URL")
    app_id: str = Field(default="", max_length=255, description="APNs topic (bundle id) or FCM project")
    keys: dict[str, str] | None = Field(default=None, description="Web Push only: {p256dh, auth}")
    locale: str = Field(default="", max_length=35)


class RuleBody(BaseModel):
    pattern: str = Field(min_length=1, max_length=512)
    match: Literal["word", "regex"] = "word"
    action: Literal["block", "mask"] = "block"
    enabled: bool = True
    note: str = Field(default="", max_length=512)


class FilterCheckBody(BaseModel):
    text: str = Field(min_length=1, max_length=65536)


# ---------------------------------------------------------------------------- helpers


def _tokens(pair: TokenPair) -> dict[str, Any]:
    return {
        "user_id": pair.user_id,
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
    }


def _group(info: GroupInfo) -> dict[str, Any]:
    g = info.group
    return {
        "group_id": g.gid,
        "conv": info.conv,
        "name": g.name,
        "avatar": g.avatar,
        "owner": g.owner,
        "created_at": g.created_at,
        "member_count": info.member_count,
    }


def _push_target(t: PushTarget) -> dict[str, Any]:
    out: dict[str, Any] = {"device": t.device, "provider": t.provider, "token": t.token, "app_id": t.app_id}
    if t.keys:
        out["keys"] = msgspec.json.decode(t.keys)
    return out | {"locale": t.locale, "updated_at": t.updated_at}


def _rule(r: FilterRule) -> dict[str, Any]:
    return {
        "rule_id": r.rule_id,
        "pattern": r.pattern,
        "match": r.match,
        "action": r.action,
        "enabled": r.enabled,
        "note": r.note,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def _error(code: ErrorCode, message: str, retryable: bool, detail: dict[str, Any] | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": int(code), "name": code.name.lower(), "message": message, "retryable": retryable}
    if detail is not None:
        error["detail"] = detail
    return JSONResponse({"error": error}, status_code=int(code))


async def current_user(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization or not authorization.startswith("Bearer "):
        raise unauthorized("missing Authorization: Bearer <access token>")
    ctx: ApiContext = request.app.state.ctx
    return ctx.auth.verify_access_token(authorization[len("Bearer ") :].strip())


async def admin(request: Request, x_admin_key: Annotated[str | None, Header()] = None) -> None:
    ctx: ApiContext = request.app.state.ctx
    ctx.auth.check_admin_key(x_admin_key)


User = Annotated[str, Depends(current_user)]


def build_api(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="Flare IM API", version="1", description="REST API of the Flare IM server.")

    @app.exception_handler(FlareError)
    async def on_flare_error(_: Request, exc: FlareError) -> JSONResponse:
        return _error(exc.code, exc.message, exc.retryable, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        code = ErrorCode.BAD_REQUEST if first.get("type") == "json_invalid" else ErrorCode.INVALID
        return _error(code, f"{where}: {first.get('msg', 'invalid request')}", False)

    app.state.ctx = ctx

    # ------------------------------------------------------------------ service

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/gateways", tags=["service"])
    async def gateways() -> dict[str, Any]:
        """The WebSocket URL(s) a client should connect to (G3)."""
        return {"websocket": ctx.ws_urls, "protocol": 1, "encodings": ["json", "msgpack"]}

    # ------------------------------------------------------------------ accounts

    @app.post("/v1/auth/register", tags=["accounts"], status_code=201)
    async def register(body: RegisterBody) -> dict[str, Any]:
        return _tokens(await ctx.users.register(body.username, body.password, body.display_name))

    @app.post("/v1/auth/login", tags=["accounts"])
    async def login(body: LoginBody) -> dict[str, Any]:
        return _tokens(await ctx.users.login(body.username, body.password))

    @app.post("/v1/auth/refresh", tags=["accounts"])
    async def refresh(body: RefreshBody) -> dict[str, Any]:
        return _tokens(await ctx.auth.refresh(body.refresh_token))

    @app.post("/v1/admin/users", tags=["admin"], status_code=201, dependencies=[Depends(admin)])
    async def admin_create_user(body: AdminUserBody) -> dict[str, Any]:
        """Server-to-server: a business backend creates a user (X-Admin-Key header)."""
        user = await ctx.users.create_by_admin(body.user_id, body.display_name, body.avatar)
        return {
            "user_id": user.uid,
            "display_name": user.display_name,
            "avatar": user.avatar,
            "created_at": user.created_at,
        }

    @app.post("/v1/admin/users:batch", tags=["admin"], dependencies=[Depends(admin)])
    async def admin_import_users(body: AdminUsersBody) -> dict[str, Any]:
        """Server-to-server: create up to 1000 users in one call (existing ids are reported, not changed)."""
        created, existing = await ctx.users.import_by_admin([(u.user_id, u.display_name, u.avatar) for u in body.users])
        return {"created": created, "existing": existing}

    @app.post("/v1/admin/tokens", tags=["admin"], dependencies=[Depends(admin)])
    async def admin_issue_tokens(body: AdminTokensBody) -> dict[str, Any]:
        """Server-to-server: access tokens for up to 1000 users in one call."""
        tokens = await ctx.users.issue_tokens_by_admin(body.user_ids, body.ttl_s)
        return {"tokens": tokens, "token_type": "Bearer", "expires_in": body.ttl_s or ctx.auth.access_ttl_s}

    @app.post("/v1/admin/users/{user_id}/tokens", tags=["admin"], dependencies=[Depends(admin)])
    async def admin_issue_token(user_id: str, body: AdminTokenBody | None = None) -> dict[str, Any]:
        """Server-to-server: issue an access token for a user, to hand to that user's app."""
        ttl = body.ttl_s if body else None
        token = await ctx.users.issue_token_by_admin(user_id, ttl)
        return {
            "user_id": user_id,
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ttl or ctx.auth.access_ttl_s,
        }

    # ------------------------------------------------------------------ users

    def _profile(u: Any, private: bool = False) -> dict[str, Any]:
        out = {"user_id": u.uid, "display_name": u.display_name, "avatar": u.avatar}
        if private:
            out |= {"username": u.username, "created_at": u.created_at}
        return out

    @app.get("/v1/me", tags=["users"])
    async def me(uid: User) -> dict[str, Any]:
        return _profile(await ctx.users.get(uid), private=True)

    @app.patch("/v1/me", tags=["users"])
    async def update_me(uid: User, body: ProfileBody) -> dict[str, Any]:
        return _profile(
            await ctx.users.update_profile(uid, display_name=body.display_name, avatar=body.avatar), private=True
        )

    @app.get("/v1/users", tags=["users"])
    async def users(uid: User, ids: Annotated[str, Query(description="comma-separated user ids")]) -> dict[str, Any]:
        wanted = [i for i in ids.split(",") if i]
        return {"items": [_profile(u) for u in await ctx.users.profiles(wanted)]}

    # ------------------------------------------------------------------ devices (push targets)

    @app.get("/v1/me/devices", tags=["devices"])
    async def my_devices(uid: User) -> dict[str, Any]:
        """The push targets registered for the user's devices."""
        return {"items": [_push_target(t) for t in await ctx.devices.push_targets(uid)]}

    @app.put("/v1/me/devices/{device}/push", tags=["devices"])
    async def register_push(uid: User, device: str, body: PushBody) -> dict[str, Any]:
        """Register or replace where notifications reach this device (after login, and whenever the
        provider issues a new token)."""
        target = await ctx.devices.register_push(
            uid, device, body.provider, body.token, app_id=body.app_id, keys=body.keys, locale=body.locale
        )
        return _push_target(target)

    @app.delete("/v1/me/devices/{device}/push", tags=["devices"], status_code=204)
    async def unregister_push(uid: User, device: str) -> None:
        """Stop notifications to this device (at logout). Nothing registered is not an error."""
        await ctx.devices.unregister_push(uid, device)

    # ------------------------------------------------------------------ content filter (admin)

    @app.get("/v1/admin/filter/rules", tags=["admin"], dependencies=[Depends(admin)])
    async def filter_rules() -> dict[str, Any]:
        return {"items": [_rule(r) for r in await ctx.content_filter.rules()]}

    @app.post("/v1/admin/filter/rules", tags=["admin"], status_code=201, dependencies=[Depends(admin)])
    async def create_filter_rule(body: RuleBody) -> dict[str, Any]:
        """A new rule; this node applies it at once, the others within ``filter_refresh_s``."""
        f = ctx.content_filter
        rule = await f.put_rule(
            None, pattern=body.pattern, match=body.match, action=body.action, enabled=body.enabled, note=body.note
        )
        return _rule(rule)

    @app.put("/v1/admin/filter/rules/{rule_id}", tags=["admin"], dependencies=[Depends(admin)])
    async def put_filter_rule(rule_id: str, body: RuleBody) -> dict[str, Any]:
        """Create or replace the rule ``rule_id``."""
        f = ctx.content_filter
        rule = await f.put_rule(
            rule_id, pattern=body.pattern, match=body.match, action=body.action, enabled=body.enabled, note=body.note
        )
        return _rule(rule)

    @app.delete("/v1/admin/filter/rules/{rule_id}", tags=["admin"], status_code=204, dependencies=[Depends(admin)])
    async def delete_filter_rule(rule_id: str) -> None:
        await ctx.content_filter.delete_rule(rule_id)

    @app.post("/v1/admin/filter/check", tags=["admin"], dependencies=[Depends(admin)])
    async def check_filter(body: FilterCheckBody) -> dict[str, Any]:
        """What this node's rules do to a text: ``{blocked, text}`` (the masked text when not blocked)."""
        try:
            screened = ctx.content_filter.screen({"text": body.text})
        except FlareError as exc:
            if exc.code != ErrorCode.BLOCKED:
                raise
            return {"blocked": True, "text": None}
        return {"blocked": False, "text": screened["text"]}

    # ------------------------------------------------------------------ groups

    @app.post("/v1/groups", tags=["groups"], status_code=201)
    async def create_group(uid: User, body: GroupCreateBody) -> dict[str, Any]:
        return _group(
            await ctx.groups.create(uid, name=body.name, avatar=body.avatar, members=body.members, gid=body.group_id)
        )

    @app.get("/v1/groups/{gid}", tags=["groups"])
    async def get_group(uid: User, gid: str) -> dict[str, Any]:
        return _group(await ctx.groups.info(uid, gid))

    @app.patch("/v1/groups/{gid}", tags=["groups"])
    async def update_group(uid: User, gid: str, body: GroupUpdateBody) -> dict[str, Any]:
        return _group(await ctx.groups.update(uid, gid, name=body.name, avatar=body.avatar))

    @app.get("/v1/groups/{gid}/members", tags=["groups"])
    async def group_members(uid: User, gid: str) -> dict[str, Any]:
        members = await ctx.groups.members(uid, gid)
        return {"items": [{"user_id": m.uid, "role": m.role, "join_seq": m.join_seq} for m in members]}

    @app.post("/v1/groups/{gid}/members", tags=["groups"])
    async def add_members(uid: User, gid: str, body: MembersBody) -> dict[str, Any]:
        return {"added": await ctx.groups.add_members(uid, gid, body.user_ids)}

    @app.delete("/v1/groups/{gid}/members/{member}", tags=["groups"], status_code=204)
    async def remove_member(uid: User, gid: str, member: str) -> None:
        await ctx.groups.remove_member(uid, gid, member)

    @app.post("/v1/groups/{gid}/leave", tags=["groups"], status_code=204)
    async def leave_group(uid: User, gid: str) -> None:
        await ctx.groups.leave(uid, gid)

    @app.put("/v1/groups/{gid}/members/{member}/role", tags=["groups"], status_code=204)
    async def set_role(uid: User, gid: str, member: str, body: RoleBody) -> None:
        await ctx.groups.set_role(uid, gid, member, body.role)

    # ------------------------------------------------------------------ conversations and messages

    @app.get("/v1/conversations", tags=["conversations"])
    async def conversations(
        uid: User,
        since: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        strategy: Annotated[Literal["incremental", "full", "fast"], Query()] = "incremental",
        recent: Annotated[int, Query(ge=0, le=50)] = 0,
    ) -> dict[str, Any]:
        page = await ctx.sync.conversations(uid, since=since, limit=limit, strategy=strategy, recent=recent)
        return {"items": msgspec.to_builtins(page.items), "version": page.version, "more": page.more}

    @app.get("/v1/conversations/{conv}/messages", tags=["conversations"])
    async def history(
        uid: User,
        conv: str,
        after: Annotated[int | None, Query(ge=0)] = None,
        before: Annotated[int | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        page = await ctx.sync.messages(uid, conv, after=after, before=before, limit=limit)
        return {
            "conv": page.conv,
            "items": msgspec.to_builtins(page.items),
            "max_seq": page.max_seq,
            "min_seq": page.min_seq,
            "more": page.more,
        }

    @app.post("/v1/conversations/{conv}/messages", tags=["conversations"])
    async def send(uid: User, conv: str, body: SendBody) -> dict[str, Any]:
        """Send as the token's user (bots, business systems): same path and ack as the WebSocket."""
        message, duplicate = await ctx.router.send(uid, conv, body.cmid, body.kind, body.body)
        out = {"conv": message.conv, "seq": message.seq, "msg_id": message.msg_id, "ts": message.ts}
        out["duplicate"] = duplicate
        if (stored := stored_if_filtered(body.body, message.body)) is not None:
            out["body"] = stored
        return out

    @app.post("/v1/conversations/{conv}/messages/{seq}/ops", tags=["conversations"])
    async def operate(uid: User, conv: str, seq: int, body: OpBody) -> dict[str, Any]:
        """Recall, delete (for everyone or for me), edit, react or unreact: same rules as the WebSocket."""
        ops = ctx.operations
        if body.op == DELETE_FOR_ME:
            hidden = await ops.hide(uid, "", conv, [seq])
            return {"conv": hidden.conv, "seqs": hidden.seqs, "version": hidden.version}
        result = await ops.apply(
            uid, conv, body.op, seq, body.opid, body=body.body, base_version=body.base_version, emoji=body.emoji
        )
        event = result.event
        out = {"conv": event.conv, "seq": event.seq, "msg_id": event.msg_id, "ts": event.ts}
        out |= {"duplicate": result.duplicate, "target": result.target, "version": result.version}
        if body.body and (stored := stored_if_filtered(body.body, event.body.get("body"))) is not None:
            out["body"] = stored
        return out

    @app.get("/v1/conversations/{conv}/messages/{seq}/revisions", tags=["conversations"])
    async def revisions(uid: User, conv: str, seq: int) -> dict[str, Any]:
        """A message in its current state and its earlier versions (edit history), oldest first."""
        message, earlier = await ctx.operations.revisions(uid, conv, seq)
        return {
            "message": msgspec.to_builtins(message),
            "revisions": [{"version": r.version, "body": r.body, "ts": r.ts} for r in earlier],
        }

    @app.post("/v1/conversations/{conv}/forward", tags=["conversations"])
    async def forward(uid: User, conv: str, body: ForwardBody) -> dict[str, Any]:
        """Copy messages of ``conv`` into ``to``: one as it is, several merged into one message."""
        message, duplicate = await ctx.operations.forward(uid, conv, body.seqs, body.to, body.cmid, title=body.title)
        return {
            "conv": message.conv,
            "seq": message.seq,
            "msg_id": message.msg_id,
            "ts": message.ts,
            "duplicate": duplicate,
        }

    @app.get("/v1/conversations/{conv}/messages/{seq}/readers", tags=["conversations"])
    async def readers(uid: User, conv: str, seq: int) -> dict[str, Any]:
        """Which members have read message ``seq`` (group read receipts): ``read`` and ``unread`` lists."""
        state = await ctx.sync.readers(uid, conv, seq)
        return {
            "conv": state.conv,
            "seq": state.seq,
            "read": state.read,
            "unread": state.unread,
            "read_count": len(state.read),
            "unread_count": len(state.unread),
        }

    @app.patch("/v1/conversations/{conv}/settings", tags=["conversations"])
    async def update_settings(uid: User, conv: str, body: SettingsBody) -> dict[str, Any]:
        """Pin, mute, hide, keep a draft, or clear history for me; pushed to the user's devices."""
        change = SettingsChange(body.pinned, body.muted, body.hidden, body.draft, body.clear_to)
        settings = await ctx.sync.update_settings(uid, "", conv, change)
        out: dict[str, Any] = msgspec.to_builtins(settings)
        out.pop("type", None)
        return out

    @app.post("/v1/conversations/{conv}/read", tags=["conversations"], status_code=204)
    async def mark_read(uid: User, conv: str, body: ReadBody) -> None:
        await ctx.sync.mark_read(uid, "", conv, body.seq)

    return app
