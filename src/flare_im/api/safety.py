"""REST routes of users' safety (docs/protocol.md §8b): a user's block list, group mutes, and reports with the
administrators' queue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from flare_im.api import schemas as shapes
from flare_im.api.openapi import reply
from flare_im.api.schemas import CONV_PATTERN, GroupPath, UserPath
from flare_im.api.spam import install_spam_routes
from flare_im.backends.safety.base import (
    EVERYONE,
    FOREVER,
    REPORT_STATES,
    Block,
    GroupMute,
    Invite,
    JoinRequest,
    Report,
)
from flare_im.ids import now_ms
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.blocks import MAX_MUTE_MS, BlockService, MuteService
from flare_im.services.joins import MAX_INVITE_S, MAX_LIMIT, JoinService
from flare_im.services.reports import ACTIONS, MAX_NOTE, REASONS, ReportService
from flare_im.services.spam import SpamGuard

if TYPE_CHECKING:
    from flare_im.api.http import ApiContext

MAX_MS = 2**62
MAX_INT = 2**63 - 1
MAX_MUTE_S = MAX_MUTE_MS // 1000


@dataclass(slots=True)
class SafetyApi:
    blocks: BlockService
    mutes: MuteService
    reports: ReportService
    joins: JoinService
    spam: SpamGuard


class BlockEntry(BaseModel):
    user_id: str
    created_at: int


class BlockListReply(BaseModel):
    items: list[BlockEntry]
    version: int = Field(description="grows with every change; the `blocks` frame carries the same")


class MuteBody(BaseModel):
    duration_s: int | None = Field(
        default=None,
        ge=1,
        le=MAX_MUTE_S,
        description="seconds from now until the mute ends (at most 366 days); left out or null: until lifted",
    )


class MuteEntry(BaseModel):
    user_id: str = Field(description='the muted member, or "*" for everyone but the owner and admins')
    until: int = Field(description="epoch ms; 0 when the mute lasts until lifted")
    actor: str
    created_at: int


class MuteListReply(BaseModel):
    items: list[MuteEntry]


# A report names a user, or a message by conv and seq: one or the other.
_USER_OR_MESSAGE: dict[str, Any] = {
    "anyOf": [
        {
            "required": ["user_id"],
            "properties": {"user_id": {"type": "string"}, "conv": {"type": "null"}, "seq": {"type": "null"}},
        },
        {
            "required": ["conv", "seq"],
            "properties": {"conv": {"type": "string"}, "seq": {"type": "integer"}, "user_id": {"type": "null"}},
        },
    ]
}


class ReportBody(BaseModel):
    """A user (``user_id``) or a message (``conv`` and ``seq``), not both."""

    model_config = ConfigDict(json_schema_extra=_USER_OR_MESSAGE)
    user_id: shapes.UserId | None = Field(default=None, description="the reported user")
    conv: str | None = Field(
        default=None,
        max_length=160,
        description="a reported message's conversation",
        json_schema_extra={"pattern": CONV_PATTERN},
    )
    seq: int | None = Field(default=None, ge=1, le=MAX_INT, description="and its seq")
    reason: Literal[REASONS] = "other"  # type: ignore[valid-type]
    note: str = shapes.text(MAX_NOTE, default="")


class ReportEntry(BaseModel):
    report_id: str
    user_id: str = Field(description="the reported user")
    conv: str = ""
    seq: int = 0
    reason: str
    note: str = ""
    state: str = Field(description="open | resolved | dismissed")
    created_at: int
    resolved_at: int = 0
    action: str = Field(default="", description="none | dismiss | recall | mute, once closed")
    reporter: str = Field(default="", description="admin only")
    resolver: str = Field(default="", description="admin only: the admin key id that closed it")
    resolution: str = Field(default="", description="admin only: the admin's note")
    message: dict[str, Any] | None = Field(default=None, description="admin only: the message when reported")


class ReportList(BaseModel):
    items: list[ReportEntry]


class ResolveBody(BaseModel):
    action: str = Field(json_schema_extra={"enum": list(ACTIONS)})
    note: str = Field(default="", max_length=MAX_NOTE)
    mute_s: int | None = Field(
        default=None, ge=1, le=MAX_MUTE_S, description="mute: seconds from now (≤ 366 days); null: until lifted"
    )


class InviteBody(BaseModel):
    max_uses: int = Field(default=0, ge=0, le=1_000_000, description="0: unlimited")
    expires_in_s: int = Field(default=0, ge=0, le=MAX_INVITE_S, description="0: never expires")
    approval: bool = Field(default=False, description="joins wait for an owner's or admin's approval")


class InviteEntry(BaseModel):
    code: str
    group_id: str
    creator: str = ""
    created_at: int = 0
    expires_at: int = Field(default=0, description="epoch ms; 0: never")
    max_uses: int = 0
    uses: int = 0
    approval: bool


class InviteList(BaseModel):
    items: list[InviteEntry]


class JoinBody(BaseModel):
    note: str = Field(default="", max_length=500, description="to the admins, when the link needs approval")


class JoinReply(BaseModel):
    state: str = Field(description="joined | pending (waiting for approval) | member (already one)")
    group_id: str
    conv: str


class JoinRequestEntry(BaseModel):
    user_id: str
    note: str = ""
    state: str
    created_at: int
    decided_at: int = 0
    decider: str = ""


class JoinRequestList(BaseModel):
    items: list[JoinRequestEntry]


class DecideBody(BaseModel):
    approve: bool


class LimitBody(BaseModel):
    max_members: int = Field(ge=0, le=MAX_LIMIT, description="0: the server's group_max_members")


class LimitReply(BaseModel):
    group_id: str
    max_members: int = Field(description="the limit in force")


def invite_json(i: Invite, *, full: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"code": i.code, "group_id": i.conv[2:], "approval": i.approval, "expires_at": i.expires_at}
    if full:
        out |= {"creator": i.creator, "created_at": i.created_at, "max_uses": i.max_uses, "uses": i.uses}
    return out


def request_json(r: JoinRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"user_id": r.uid, "note": r.note, "state": r.state, "created_at": r.created_at}
    if r.decided_at:
        out |= {"decided_at": r.decided_at, "decider": r.decider}
    return out


def report_json(r: Report, *, admin: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "report_id": r.report_id,
        "user_id": r.target,
        "reason": r.reason,
        "state": r.state,
        "created_at": r.created_at,
    }
    if r.conv:
        out |= {"conv": r.conv, "seq": r.seq}
    if r.note:
        out["note"] = r.note
    if r.resolved_at:
        out |= {"resolved_at": r.resolved_at, "action": r.action}
    if admin:
        out |= {"reporter": r.reporter, "resolver": r.resolver, "resolution": r.resolution}
        if r.snapshot:
            out["message"] = json.loads(r.snapshot)
    return out


def _until(body: MuteBody | None) -> int | None:
    """The mute's end (epoch ms) from its duration; None: until lifted."""
    return now_ms() + body.duration_s * 1000 if body is not None and body.duration_s else None


def blocks_json(found: tuple[list[Block], int]) -> dict[str, Any]:
    blocks, version = found
    return {"items": [{"user_id": b.target, "created_at": b.created_at} for b in blocks], "version": version}


def mute_json(m: GroupMute) -> dict[str, Any]:
    return {
        "user_id": m.uid,
        "until": 0 if m.until >= FOREVER else m.until,
        "actor": m.actor,
        "created_at": m.created_at,
    }


_FORBIDDEN = (ErrorCode.FORBIDDEN, "not a member, or not the owner or an admin, or the target's role is above")


def install_safety_routes(app: FastAPI, ctx: ApiContext, user: Any, admin: Any) -> None:
    """Adds the routes; ``user`` is the dependency that yields the caller's user id, ``admin`` the admin key's."""
    caller = Depends(user)

    def api() -> SafetyApi:
        found = ctx.safety
        if found is None:
            raise FlareError(ErrorCode.UNAVAILABLE, "safety features are not available on this server")
        return found

    install_spam_routes(app, api, admin)

    @app.get("/v1/me/blocks", tags=["safety"], **reply(BlockListReply))
    async def my_blocks(uid: str = caller) -> dict[str, Any]:
        """The users the caller blocks, oldest first."""
        return blocks_json(await api().blocks.blocked(uid))

    @app.put(
        "/v1/me/blocks/{user_id}",
        tags=["safety"],
        **reply(BlockListReply, (ErrorCode.FORBIDDEN, "blocking yourself"), ErrorCode.NOT_FOUND),
    )
    async def block_user(user_id: UserPath, uid: str = caller) -> dict[str, Any]:
        """Block a user (idempotent). Its direct messages to the caller are refused from now on (403, reason
        ``blocked``), and its typing and presence no longer reach the caller. Every device of the caller gets the
        new list as a ``blocks`` frame."""
        return blocks_json(await api().blocks.set(uid, user_id, True))

    @app.delete("/v1/me/blocks/{user_id}", tags=["safety"], **reply(BlockListReply, ErrorCode.FORBIDDEN))
    async def unblock_user(user_id: UserPath, uid: str = caller) -> dict[str, Any]:
        """Unblock a user (idempotent); the caller's devices get the new list."""
        return blocks_json(await api().blocks.set(uid, user_id, False))

    @app.get(
        "/v1/groups/{gid}/mutes", tags=["safety"], **reply(MuteListReply, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND)
    )
    async def group_mutes(gid: GroupPath, uid: str = caller) -> dict[str, Any]:
        """The group's current mutes (any member may read them)."""
        return {"items": [mute_json(m) for m in await api().mutes.mutes(uid, gid)]}

    @app.put(
        "/v1/groups/{gid}/mutes/{user_id}",
        tags=["safety"],
        **reply(MuteEntry, _FORBIDDEN, ErrorCode.NOT_FOUND),
    )
    async def mute_member(
        gid: GroupPath, user_id: UserPath, body: Annotated[MuteBody | None, Body()] = None, uid: str = caller
    ) -> dict[str, Any]:
        """Mute a member until a time (owner or admin; an admin mutes members only). Its sends to the group are
        refused (403, reason ``muted``) until then; the group gets a ``member_muted`` notice."""
        return mute_json(await api().mutes.mute(uid, gid, user_id, _until(body)))

    @app.delete(
        "/v1/groups/{gid}/mutes/{user_id}",
        tags=["safety"],
        status_code=204,
        **reply(None, _FORBIDDEN, ErrorCode.NOT_FOUND),
    )
    async def unmute_member(gid: GroupPath, user_id: UserPath, uid: str = caller) -> None:
        """Lift a member's mute (owner or admin)."""
        await api().mutes.unmute(uid, gid, user_id)

    @app.put("/v1/groups/{gid}/mute-all", tags=["safety"], **reply(MuteEntry, _FORBIDDEN, ErrorCode.NOT_FOUND))
    async def mute_all(
        gid: GroupPath, body: Annotated[MuteBody | None, Body()] = None, uid: str = caller
    ) -> dict[str, Any]:
        """Mute everyone but the owner and admins until a time (owner or admin): members' sends are refused
        (403, reason ``muted_all``); the group gets a ``group_muted`` notice."""
        return mute_json(await api().mutes.mute(uid, gid, EVERYONE, _until(body)))

    @app.delete(
        "/v1/groups/{gid}/mute-all", tags=["safety"], status_code=204, **reply(None, _FORBIDDEN, ErrorCode.NOT_FOUND)
    )
    async def unmute_all(gid: GroupPath, uid: str = caller) -> None:
        """End a mute-all (owner or admin)."""
        await api().mutes.unmute(uid, gid, EVERYONE)

    # ------------------------------------------------------------------ reports

    @app.post(
        "/v1/reports",
        tags=["safety"],
        status_code=201,
        **reply(
            ReportEntry,
            (ErrorCode.FORBIDDEN, "the conversation is not yours to read, or you report yourself or your message"),
            ErrorCode.NOT_FOUND,
            ErrorCode.GONE,
        ),
    )
    async def report(body: ReportBody, uid: str = caller) -> dict[str, Any]:
        """Report a message (``conv`` and ``seq``) or a user (``user_id``) to the administrators. The same user and
        message reported again while the first report is open answers that report."""
        found = await api().reports.report(
            uid, user=body.user_id, conv=body.conv, seq=body.seq, reason=body.reason, note=body.note
        )
        return report_json(found)

    @app.get("/v1/me/reports", tags=["safety"], **reply(ReportList))
    async def my_reports(uid: str = caller, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        """The caller's reports, newest first, with their state and the action taken."""
        return {"items": [report_json(r) for r in await api().reports.mine(uid, limit=limit)]}

    @app.get("/v1/admin/moderation/reports", tags=["admin"], dependencies=[Depends(admin)], **reply(ReportList))
    async def report_queue(
        state: Annotated[
            str,
            Query(
                max_length=16,
                description="open (default), resolved, dismissed, or '' for all",
                json_schema_extra={"enum": ["", *REPORT_STATES]},
            ),
        ] = "open",
        before: Annotated[int, Query(ge=0, le=MAX_MS, description="created before (epoch ms): the next page")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The report queue, newest first, with the reported message as it was when reported."""
        found = await api().reports.queue(state=state, before=before, limit=limit)
        return {"items": [report_json(r, admin=True) for r in found]}

    @app.get(
        "/v1/admin/moderation/reports/{report_id}",
        tags=["admin"],
        dependencies=[Depends(admin)],
        **reply(ReportEntry, ErrorCode.NOT_FOUND),
    )
    async def report_detail(report_id: Annotated[str, Path(max_length=32)]) -> dict[str, Any]:
        return report_json(await api().reports.get(report_id), admin=True)

    @app.post(
        "/v1/admin/moderation/reports/{report_id}/resolve",
        tags=["admin"],
        dependencies=[Depends(admin)],
        **reply(
            ReportEntry,
            ErrorCode.NOT_FOUND,
            (ErrorCode.CONFLICT, "closed already, or recall/mute of a user report, or mute outside a group"),
        ),
    )
    async def resolve_report(
        request: Request, report_id: Annotated[str, Path(max_length=32)], body: ResolveBody
    ) -> dict[str, Any]:
        """Act on an open report and close it: ``none``, ``dismiss``, ``recall`` (the reported message, for
        everyone) or ``mute`` (its sender in that group for ``mute_s`` seconds). 409 when it is closed already, or
        when the action does not apply to what it reports (``recall`` or ``mute`` of a user, ``mute`` of a message
        outside a group): the report stays open."""
        principal = getattr(request.state, "admin", None)
        resolver = str(getattr(principal, "key_id", "root"))
        found = await api().reports.resolve(
            report_id,
            body.action,
            resolver=resolver,
            note=body.note,
            mute_until=now_ms() + body.mute_s * 1000 if body.mute_s else None,
        )
        return report_json(found, admin=True)

    # ------------------------------------------------------------------ invite links, approval, member limit

    @app.post(
        "/v1/groups/{gid}/invites",
        tags=["safety"],
        status_code=201,
        **reply(InviteEntry, _FORBIDDEN, ErrorCode.NOT_FOUND),
    )
    async def create_invite(gid: GroupPath, body: InviteBody, uid: str = caller) -> dict[str, Any]:
        """Make an invite link (owner or admin). Give the ``code`` to people; they join with
        ``POST /v1/invites/{code}/join``."""
        invite = await api().joins.create_invite(
            uid, gid, max_uses=body.max_uses, expires_in_s=body.expires_in_s, approval=body.approval
        )
        return invite_json(invite)

    @app.get("/v1/groups/{gid}/invites", tags=["safety"], **reply(InviteList, _FORBIDDEN, ErrorCode.NOT_FOUND))
    async def group_invites(gid: GroupPath, uid: str = caller) -> dict[str, Any]:
        """The group's links not revoked, newest first, with their uses (owner or admin)."""
        return {"items": [invite_json(i) for i in await api().joins.invites(uid, gid)]}

    @app.delete(
        "/v1/groups/{gid}/invites/{code}",
        tags=["safety"],
        status_code=204,
        **reply(None, _FORBIDDEN, ErrorCode.NOT_FOUND),
    )
    async def revoke_invite(gid: GroupPath, code: Annotated[str, Path(max_length=64)], uid: str = caller) -> None:
        """Revoke a link: it joins nobody any more (owner or admin)."""
        await api().joins.revoke(uid, gid, code)

    @app.get("/v1/invites/{code}", tags=["safety"], **reply(InviteEntry, ErrorCode.NOT_FOUND, ErrorCode.GONE))
    async def preview_invite(code: Annotated[str, Path(max_length=64)], uid: str = caller) -> dict[str, Any]:
        """Where a link leads (the group, whether joining needs approval) before joining."""
        return invite_json(await api().joins.preview(code), full=False)

    @app.post(
        "/v1/invites/{code}/join",
        tags=["safety"],
        **reply(JoinReply, ErrorCode.NOT_FOUND, ErrorCode.GONE, (ErrorCode.INVALID, "the group is full")),
    )
    async def join_by_invite(
        code: Annotated[str, Path(max_length=64)], body: Annotated[JoinBody | None, Body()] = None, uid: str = caller
    ) -> dict[str, Any]:
        """Join the link's group: at once (``joined``), or as a request the owner and admins decide (``pending``)."""
        state, conv, _ = await api().joins.join(uid, code, body.note if body is not None else "")
        return {"state": state, "group_id": conv[2:], "conv": conv}

    @app.get(
        "/v1/groups/{gid}/join-requests", tags=["safety"], **reply(JoinRequestList, _FORBIDDEN, ErrorCode.NOT_FOUND)
    )
    async def join_requests(gid: GroupPath, uid: str = caller) -> dict[str, Any]:
        """Pending requests to join, oldest first (owner or admin)."""
        return {"items": [request_json(r) for r in await api().joins.requests(uid, gid)]}

    @app.post(
        "/v1/groups/{gid}/join-requests/{user_id}",
        tags=["safety"],
        **reply(JoinRequestEntry, _FORBIDDEN, ErrorCode.NOT_FOUND, (ErrorCode.INVALID, "the group is full")),
    )
    async def decide_join_request(
        gid: GroupPath, user_id: UserPath, body: DecideBody, uid: str = caller
    ) -> dict[str, Any]:
        """Approve (the user becomes a member) or deny a pending request (owner or admin); the requester's devices
        get a ``join_request`` frame with the outcome."""
        return request_json(await api().joins.decide(uid, gid, user_id, body.approve))

    @app.put(
        "/v1/admin/groups/{gid}/limit",
        tags=["admin"],
        dependencies=[Depends(admin)],
        **reply(LimitReply, ErrorCode.NOT_FOUND),
    )
    async def set_group_limit(gid: GroupPath, body: LimitBody) -> dict[str, Any]:
        """Set one group's member limit (0: back to the server's ``group_max_members``)."""
        return {"group_id": gid, "max_members": await api().joins.set_limit(gid, body.max_members)}
