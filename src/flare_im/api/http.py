"""The API gateway: REST over FastAPI (OpenAPI at /openapi.json, docs served locally at /docs and /redoc).

Errors are JSON ``{"error": {"code", "name", "message", "retryable"}}`` with the HTTP status equal to the
code of the protocol's error tree, so REST and WebSocket clients handle failures the same way (``errors.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from fastapi import Depends, FastAPI, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from flare_im.api import schemas as shapes
from flare_im.api.accounts import install_account_routes, request_ip
from flare_im.api.admin import AdminApi, install_admin_routes
from flare_im.api.docs import install_docs
from flare_im.api.errors import install_error_handlers
from flare_im.api.json_body import StrictJsonRoute
from flare_im.api.media import install_media_routes
from flare_im.api.notifications import NotificationsApi, install_notification_routes
from flare_im.api.openapi import ADMIN_KEY, BEARER, install_openapi, reply
from flare_im.api.safety import SafetyApi, install_safety_routes
from flare_im.api.schemas import ConvPath, GroupPath, UserPath
from flare_im.api.search import install_search_routes
from flare_im.api.webapp import install_webapp_routes
from flare_im.api.webhooks import install_webhook_routes
from flare_im.backends.relational.base import FilterRule, PushTarget, SettingsChange
from flare_im.netlimits import Network
from flare_im.observability.logs import bind
from flare_im.protocol.errors import ErrorCode, FlareError, unauthorized
from flare_im.protocol.values import check_body
from flare_im.services.auth import AuthService, TokenPair
from flare_im.services.content_filter import ContentFilter, stored_if_filtered
from flare_im.services.devices import DeviceService
from flare_im.services.groups import GroupInfo, GroupService
from flare_im.services.media import MediaService
from flare_im.services.operations import DELETE_FOR_ME, MessageOperations
from flare_im.services.router import MessageRouter
from flare_im.services.search import SearchService
from flare_im.services.sync import SyncService
from flare_im.services.users import UserService
from flare_im.services.webhooks import Webhooks


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
    trusted_proxies: tuple[Network, ...] = ()  # whose X-Forwarded-For names the client (services/abuse.py)
    notifications: NotificationsApi | None = None  # settings, history and push stats (api/notifications.py)
    media: MediaService | None = None  # uploads, downloads, moderation (api/media.py)
    webhooks: Webhooks | None = None  # integration endpoints and their deliveries (api/webhooks.py)
    admin: AdminApi | None = None  # bans, kicks, broadcasts, statistics, audit, scoped keys (api/admin.py)
    search: SearchService | None = None  # message search (api/search.py); None when search_url is off
    safety: SafetyApi | None = None  # blocks, group mutes (api/safety.py)


# ---------------------------------------------------------------------------- request bodies


class RegisterBody(BaseModel):
    username: shapes.UserId
    password: shapes.Password
    display_name: str = shapes.text(128, default="")
    invite: str | None = Field(default=None, max_length=256, description="invite token (registration = invite)")


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class RefreshBody(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class AdminUserBody(BaseModel):
    user_id: shapes.UserId
    display_name: str = shapes.text(128, default="")
    avatar: str = shapes.text(1024, default="")


class AdminUsersBody(BaseModel):
    users: list[AdminUserBody] = Field(min_length=1, max_length=1000)


# Integer bounds of the protocol (docs/protocol.md §3): a seq, a version or a count is an int in 0 .. 2**63-1.
MAX_INT = 2**63 - 1
TokenTtl = Annotated[int | None, Field(ge=60, le=30 * 24 * 3600, description="60 s to 30 days")]
SeqPath = Annotated[int, Path(ge=0, le=MAX_INT)]
TargetPath = Annotated[int, Path(ge=1, le=MAX_INT)]


class AdminTokensBody(BaseModel):
    user_ids: list[shapes.UserId] = Field(min_length=1, max_length=1000)
    ttl_s: TokenTtl = None


class AdminTokenBody(BaseModel):
    ttl_s: TokenTtl = None


class ProfileBody(BaseModel):
    display_name: str | None = shapes.text(128, default=None, nonblank=True)
    avatar: str | None = shapes.text(1024, default=None)


class GroupCreateBody(BaseModel):
    name: str = shapes.text(128, nonblank=True)
    avatar: str = shapes.text(1024, default="")
    members: list[shapes.UserId] = Field(default_factory=list, max_length=10_000)
    group_id: shapes.NewGroupId | None = None


class GroupUpdateBody(BaseModel):
    name: str | None = shapes.text(128, default=None, nonblank=True)
    avatar: str | None = shapes.text(1024, default=None)


class MembersBody(BaseModel):
    user_ids: list[shapes.UserId] = Field(min_length=1, max_length=1000)


class RoleBody(BaseModel):
    role: str = Field(json_schema_extra={"enum": list(shapes.ROLES)})


class SendBody(BaseModel):
    """``body`` is the body of a message of ``kind`` (the ``<Kind>Body`` schemas, services/message_kinds.py)."""

    model_config = ConfigDict(json_schema_extra=shapes.SEND_VARIANTS)
    cmid: str = Field(min_length=1, max_length=64, description="client message id (idempotency key)")
    kind: str = Field(default="text", max_length=32, json_schema_extra={"enum": list(shapes.KINDS)})
    body: dict[str, Any]


class OpBody(BaseModel):
    """``edit`` needs ``body`` (a text body) and ``base_version``; ``react`` and ``unreact`` need ``emoji``."""

    model_config = ConfigDict(json_schema_extra=shapes.OP_VARIANTS)
    op: Literal["recall", "delete", "edit", "react", "unreact", "delete_for_me"]
    opid: str = Field(min_length=1, max_length=64, description="operation id (a retried op applies once)")
    body: dict[str, Any] | None = Field(default=None, description="edit: the new body")
    base_version: int | None = Field(default=None, ge=1, le=MAX_INT, description="edit: the version it is based on")
    emoji: str | None = Field(default=None, min_length=1, max_length=32, description="react / unreact")


class ForwardBody(BaseModel):
    seqs: list[Annotated[int, Field(ge=1, le=MAX_INT)]] = Field(min_length=1, max_length=100)
    to: str = Field(min_length=3, max_length=160, description="the conversation to forward into")
    cmid: str = Field(min_length=1, max_length=64)
    title: str = Field(default="", max_length=256)


class SettingsBody(BaseModel):
    pinned: StrictBool | None = None
    muted: StrictBool | None = None
    hidden: StrictBool | None = None
    draft: str | None = Field(default=None, max_length=4096)
    clear_to: int | None = Field(default=None, ge=0, le=MAX_INT, description="clear history for me up to this seq")


class ReadBody(BaseModel):
    seq: int = Field(ge=0, le=MAX_INT)


class PushBody(BaseModel):
    """The token's form depends on the provider (one variant each); ``keys`` only for Web Push."""

    model_config = ConfigDict(json_schema_extra=shapes.PUSH_VARIANTS)
    provider: Literal["apns", "fcm", "webpush", "webhook"]
    token: str = Field(
        min_length=1, max_length=4096, description="APNs/FCM/webhook device token, or the Web Push endpoint URL"
    )
    app_id: str = Field(default="", max_length=255, description="APNs topic (bundle id) or FCM project")
    keys: dict[str, str] | None = Field(default=None, description="Web Push only: {p256dh, auth}")
    locale: str = Field(
        default="", max_length=35, description="a language tag", json_schema_extra={"pattern": shapes.LOCALE_PATTERN}
    )


class RuleBody(BaseModel):
    pattern: str = Field(
        min_length=1,
        max_length=512,
        description="A word or phrase; with `match: regex` an RE2 regular expression (one that does not compile"
        " is refused with 422).",
    )
    match: Literal["word", "regex"] = "word"
    action: Literal["block", "mask"] = "block"
    enabled: StrictBool = True
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


async def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
) -> str:
    if credentials is None or not credentials.credentials.strip():
        raise unauthorized("missing Authorization: Bearer <access token>")
    ctx: ApiContext = request.app.state.ctx
    user: str = await ctx.auth.authenticate(credentials.credentials.strip())
    bind(user=user)  # on the request's log lines (the request's middleware unbinds)
    return user


async def admin(request: Request, x_admin_key: Annotated[str | None, Security(ADMIN_KEY)]) -> None:
    ctx: ApiContext = request.app.state.ctx
    if ctx.admin is None:
        ctx.auth.check_admin_key(x_admin_key)
    else:  # scoped keys: the key's scope must cover the endpoint (services/admin.py), and it is audited
        await ctx.admin.authorize(request, x_admin_key)


User = Annotated[str, Depends(current_user)]


def build_api(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Flare IM API",
        version="1",
        description="REST API of the Flare IM server.",
        docs_url=None,
        redoc_url=None,
    )
    app.router.route_class = StrictJsonRoute  # JSON bodies read as the WebSocket reads frames (json_body.py)
    install_docs(app)
    install_openapi(app)
    install_error_handlers(app)
    app.state.ctx = ctx

    # ------------------------------------------------------------------ service

    @app.get("/healthz", tags=["service"], **reply(shapes.Health))
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/gateways", tags=["service"], **reply(shapes.Gateways))
    async def gateways() -> dict[str, Any]:
        """The WebSocket URL(s) a client should connect to (G3)."""
        return {"websocket": ctx.ws_urls, "protocol": 1, "encodings": ["json", "msgpack"]}

    # ------------------------------------------------------------------ accounts

    @app.post(
        "/v1/auth/register",
        tags=["accounts"],
        status_code=201,
        **reply(shapes.Tokens, ErrorCode.FORBIDDEN, ErrorCode.CONFLICT, ErrorCode.UNAVAILABLE),
    )
    async def register(request: Request, body: RegisterBody) -> dict[str, Any]:
        ip = request_ip(request, ctx.trusted_proxies)
        return _tokens(
            await ctx.users.register(body.username, body.password, body.display_name, invite=body.invite, ip=ip)
        )

    @app.post(
        "/v1/auth/login", tags=["accounts"], **reply(shapes.Tokens, ErrorCode.UNAUTHORIZED, ErrorCode.UNAVAILABLE)
    )
    async def login(request: Request, body: LoginBody) -> dict[str, Any]:
        ip = request_ip(request, ctx.trusted_proxies)
        return _tokens(await ctx.users.login(body.username, body.password, ip=ip))

    @app.post("/v1/auth/refresh", tags=["accounts"], **reply(shapes.Tokens, ErrorCode.UNAUTHORIZED))
    async def refresh(body: RefreshBody) -> dict[str, Any]:
        return _tokens(await ctx.auth.refresh(body.refresh_token))

    @app.post(
        "/v1/admin/users",
        tags=["admin"],
        status_code=201,
        dependencies=[Depends(admin)],
        **reply(shapes.AdminUser, ErrorCode.CONFLICT),
    )
    async def admin_create_user(body: AdminUserBody) -> dict[str, Any]:
        """Server-to-server: a business backend creates a user (X-Admin-Key header)."""
        user = await ctx.users.create_by_admin(body.user_id, body.display_name, body.avatar)
        return {
            "user_id": user.uid,
            "display_name": user.display_name,
            "avatar": user.avatar,
            "created_at": user.created_at,
        }

    @app.post("/v1/admin/users:batch", tags=["admin"], dependencies=[Depends(admin)], **reply(shapes.ImportedUsers))
    async def admin_import_users(body: AdminUsersBody) -> dict[str, Any]:
        """Server-to-server: create up to 1000 users in one call (existing ids are reported, not changed)."""
        created, existing = await ctx.users.import_by_admin([(u.user_id, u.display_name, u.avatar) for u in body.users])
        return {"created": created, "existing": existing}

    @app.post(
        "/v1/admin/tokens",
        tags=["admin"],
        dependencies=[Depends(admin)],
        **reply(shapes.IssuedTokens, ErrorCode.NOT_FOUND),
    )
    async def admin_issue_tokens(body: AdminTokensBody) -> dict[str, Any]:
        """Server-to-server: access tokens for up to 1000 users in one call."""
        tokens = await ctx.users.issue_tokens_by_admin(body.user_ids, body.ttl_s)
        return {"tokens": tokens, "token_type": "Bearer", "expires_in": body.ttl_s or ctx.auth.access_ttl_s}

    @app.post(
        "/v1/admin/users/{user_id}/tokens",
        tags=["admin"],
        dependencies=[Depends(admin)],
        **reply(shapes.IssuedToken, ErrorCode.NOT_FOUND),
    )
    async def admin_issue_token(user_id: UserPath, body: AdminTokenBody | None = None) -> dict[str, Any]:
        """Server-to-server: issue an access token for a user, to hand to that user's app."""
        ttl = body.ttl_s if body else None
        user_id, token = await ctx.users.issue_token_by_admin(user_id, ttl)
        return {
            "user_id": user_id,
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ttl or ctx.auth.access_ttl_s,
        }

    install_account_routes(app, ctx, admin)
    install_notification_routes(app, ctx, current_user, admin)
    install_media_routes(app, ctx, current_user, admin)
    install_webhook_routes(app, ctx, admin)
    install_webapp_routes(app, ctx.ws_urls)
    install_admin_routes(app, ctx, admin)
    install_search_routes(app, ctx, current_user)
    install_safety_routes(app, ctx, current_user, admin)

    # ------------------------------------------------------------------ users

    def _profile(u: Any, private: bool = False) -> dict[str, Any]:
        out = {"user_id": u.uid, "display_name": u.display_name, "avatar": u.avatar}
        if private:
            out |= {"username": u.username or "", "created_at": u.created_at}
        return out

    @app.get("/v1/me", tags=["users"], **reply(shapes.OwnProfile, ErrorCode.NOT_FOUND))
    async def me(uid: User) -> dict[str, Any]:
        return _profile(await ctx.users.get(uid), private=True)

    @app.patch("/v1/me", tags=["users"], **reply(shapes.OwnProfile, ErrorCode.NOT_FOUND))
    async def update_me(uid: User, body: ProfileBody) -> dict[str, Any]:
        return _profile(
            await ctx.users.update_profile(uid, display_name=body.display_name, avatar=body.avatar), private=True
        )

    @app.get("/v1/users", tags=["users"], **reply(shapes.Profiles))
    async def users(uid: User, ids: shapes.IdList) -> dict[str, Any]:
        wanted = [i for i in ids.split(",") if i]
        return {"items": [_profile(u) for u in await ctx.users.profiles(wanted)]}

    # ------------------------------------------------------------------ devices (push targets)

    @app.get("/v1/me/devices", tags=["devices"], **reply(shapes.PushTargets))
    async def my_devices(uid: User) -> dict[str, Any]:
        """The push targets registered for the user's devices."""
        return {"items": [_push_target(t) for t in await ctx.devices.push_targets(uid)]}

    @app.put("/v1/me/devices/{device}/push", tags=["devices"], **reply(shapes.PushTarget))
    async def register_push(uid: User, device: shapes.DevicePath, body: PushBody) -> dict[str, Any]:
        """Register or replace where notifications reach this device (after login, and whenever the
        provider issues a new token)."""
        target = await ctx.devices.register_push(
            uid, device, body.provider, body.token, app_id=body.app_id, keys=body.keys, locale=body.locale
        )
        return _push_target(target)

    @app.delete("/v1/me/devices/{device}/push", tags=["devices"], status_code=204)
    async def unregister_push(uid: User, device: shapes.DevicePath) -> None:
        """Stop notifications to this device (at logout). Nothing registered is not an error."""
        await ctx.devices.unregister_push(uid, device)

    # ------------------------------------------------------------------ content filter (admin)

    @app.get("/v1/admin/filter/rules", tags=["admin"], dependencies=[Depends(admin)], **reply(shapes.Rules))
    async def filter_rules() -> dict[str, Any]:
        return {"items": [_rule(r) for r in await ctx.content_filter.rules()]}

    @app.post(
        "/v1/admin/filter/rules", tags=["admin"], status_code=201, dependencies=[Depends(admin)], **reply(shapes.Rule)
    )
    async def create_filter_rule(body: RuleBody) -> dict[str, Any]:
        """A new rule; this node applies it at once, the others within ``filter_refresh_s``."""
        f = ctx.content_filter
        rule = await f.put_rule(
            None, pattern=body.pattern, match=body.match, action=body.action, enabled=body.enabled, note=body.note
        )
        return _rule(rule)

    @app.put("/v1/admin/filter/rules/{rule_id}", tags=["admin"], dependencies=[Depends(admin)], **reply(shapes.Rule))
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

    @app.post("/v1/admin/filter/check", tags=["admin"], dependencies=[Depends(admin)], **reply(shapes.FilterCheck))
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

    @app.post(
        "/v1/groups", tags=["groups"], status_code=201, **reply(shapes.Group, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT)
    )
    async def create_group(uid: User, body: GroupCreateBody) -> dict[str, Any]:
        return _group(
            await ctx.groups.create(uid, name=body.name, avatar=body.avatar, members=body.members, gid=body.group_id)
        )

    @app.get("/v1/groups/{gid}", tags=["groups"], **reply(shapes.Group, ErrorCode.FORBIDDEN))
    async def get_group(uid: User, gid: GroupPath) -> dict[str, Any]:
        return _group(await ctx.groups.info(uid, gid))

    @app.patch("/v1/groups/{gid}", tags=["groups"], **reply(shapes.Group, ErrorCode.FORBIDDEN))
    async def update_group(uid: User, gid: GroupPath, body: GroupUpdateBody) -> dict[str, Any]:
        return _group(await ctx.groups.update(uid, gid, name=body.name, avatar=body.avatar))

    @app.get("/v1/groups/{gid}/members", tags=["groups"], **reply(shapes.Members, ErrorCode.FORBIDDEN))
    async def group_members(uid: User, gid: GroupPath) -> dict[str, Any]:
        members = await ctx.groups.members(uid, gid)
        return {"items": [{"user_id": m.uid, "role": m.role, "join_seq": m.join_seq} for m in members]}

    @app.post("/v1/groups/{gid}/members", tags=["groups"], **reply(shapes.Added, ErrorCode.FORBIDDEN))
    async def add_members(uid: User, gid: GroupPath, body: MembersBody) -> dict[str, Any]:
        return {"added": await ctx.groups.add_members(uid, gid, body.user_ids)}

    @app.delete(
        "/v1/groups/{gid}/members/{member}", tags=["groups"], status_code=204, **reply(None, ErrorCode.FORBIDDEN)
    )
    async def remove_member(uid: User, gid: GroupPath, member: UserPath) -> None:
        await ctx.groups.remove_member(uid, gid, member)

    @app.post("/v1/groups/{gid}/leave", tags=["groups"], status_code=204, **reply(None, ErrorCode.FORBIDDEN))
    async def leave_group(uid: User, gid: GroupPath) -> None:
        await ctx.groups.leave(uid, gid)

    @app.put(
        "/v1/groups/{gid}/members/{member}/role", tags=["groups"], status_code=204, **reply(None, ErrorCode.FORBIDDEN)
    )
    async def set_role(uid: User, gid: GroupPath, member: UserPath, body: RoleBody) -> None:
        await ctx.groups.set_role(uid, gid, member, body.role)

    # ------------------------------------------------------------------ conversations and messages

    @app.get("/v1/conversations", tags=["conversations"], **reply(shapes.Conversations))
    async def conversations(
        uid: User,
        since: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        strategy: Annotated[Literal["incremental", "full", "fast"], Query()] = "incremental",
        recent: Annotated[int, Query(ge=0, le=50)] = 0,
    ) -> dict[str, Any]:
        page = await ctx.sync.conversations(uid, since=since, limit=limit, strategy=strategy, recent=recent)
        return {"items": msgspec.to_builtins(page.items), "version": page.version, "more": page.more}

    @app.get(
        "/v1/conversations/{conv}/messages",
        tags=["conversations"],
        **reply(shapes.MessagesPage, ErrorCode.FORBIDDEN, ErrorCode.GONE, ErrorCode.OUT_OF_RANGE),
    )
    async def history(
        uid: User,
        conv: ConvPath,
        after: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
        before: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
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

    @app.post(
        "/v1/conversations/{conv}/messages",
        tags=["conversations"],
        **reply(shapes.SendResult, ErrorCode.FORBIDDEN, ErrorCode.BLOCKED),
    )
    async def send(uid: User, conv: ConvPath, body: SendBody) -> dict[str, Any]:
        """Send as the token's user (bots, business systems): same path and ack as the WebSocket."""
        check_body(body.body)
        message, duplicate = await ctx.router.send(uid, conv, body.cmid, body.kind, body.body)
        out = {"conv": message.conv, "seq": message.seq, "msg_id": message.msg_id, "ts": message.ts}
        out["duplicate"] = duplicate
        if (stored := stored_if_filtered(body.body, message.body)) is not None:
            out["body"] = stored
        return out

    @app.post(
        "/v1/conversations/{conv}/messages/{seq}/ops",
        tags=["conversations"],
        **reply(
            shapes.OpResult | shapes.Hidden, ErrorCode.FORBIDDEN, ErrorCode.CONFLICT, ErrorCode.GONE, ErrorCode.BLOCKED
        ),
    )
    async def operate(uid: User, conv: ConvPath, seq: TargetPath, body: OpBody) -> dict[str, Any]:
        """Recall, delete (for everyone or for me), edit, react or unreact: same rules as the WebSocket."""
        if body.body is not None:
            check_body(body.body)
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

    @app.get(
        "/v1/conversations/{conv}/messages/{seq}/revisions",
        tags=["conversations"],
        **reply(shapes.Revisions, ErrorCode.FORBIDDEN, ErrorCode.GONE),
    )
    async def revisions(uid: User, conv: ConvPath, seq: SeqPath) -> dict[str, Any]:
        """A message in its current state and its earlier versions (edit history), oldest first."""
        message, earlier = await ctx.operations.revisions(uid, conv, seq)
        return {
            "message": msgspec.to_builtins(message),
            "revisions": [{"version": r.version, "body": r.body, "ts": r.ts} for r in earlier],
        }

    @app.post(
        "/v1/conversations/{conv}/forward",
        tags=["conversations"],
        **reply(shapes.SendResult, ErrorCode.FORBIDDEN, ErrorCode.GONE, ErrorCode.BLOCKED),
    )
    async def forward(uid: User, conv: ConvPath, body: ForwardBody) -> dict[str, Any]:
        """Copy messages of ``conv`` into ``to``: one as it is, several merged into one message."""
        message, duplicate = await ctx.operations.forward(uid, conv, body.seqs, body.to, body.cmid, title=body.title)
        return {
            "conv": message.conv,
            "seq": message.seq,
            "msg_id": message.msg_id,
            "ts": message.ts,
            "duplicate": duplicate,
        }

    @app.get(
        "/v1/conversations/{conv}/messages/{seq}/readers",
        tags=["conversations"],
        **reply(shapes.Readers, ErrorCode.FORBIDDEN, ErrorCode.OUT_OF_RANGE),
    )
    async def readers(uid: User, conv: ConvPath, seq: SeqPath) -> dict[str, Any]:
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

    @app.patch(
        "/v1/conversations/{conv}/settings",
        tags=["conversations"],
        **reply(shapes.ConvSettings, ErrorCode.FORBIDDEN, ErrorCode.OUT_OF_RANGE),
    )
    async def update_settings(uid: User, conv: ConvPath, body: SettingsBody) -> dict[str, Any]:
        """Pin, mute, hide, keep a draft, or clear history for me; pushed to the user's devices."""
        change = SettingsChange(body.pinned, body.muted, body.hidden, body.draft, body.clear_to)
        settings = await ctx.sync.update_settings(uid, "", conv, change)
        out: dict[str, Any] = msgspec.to_builtins(settings)
        out.pop("type", None)
        return out

    @app.post(
        "/v1/conversations/{conv}/read",
        tags=["conversations"],
        status_code=204,
        **reply(None, ErrorCode.FORBIDDEN, ErrorCode.OUT_OF_RANGE),
    )
    async def mark_read(uid: User, conv: ConvPath, body: ReadBody) -> None:
        await ctx.sync.mark_read(uid, "", conv, body.seq)

    return app
