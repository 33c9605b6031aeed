"""The ``flare.v1.Flare`` gRPC service (proto/flare/v1/flare.proto): the REST API's server-to-server operations.

Each call is checked as its REST twin is: the request goes through the same pydantic body model (its bounds and
messages) and then the same service method, so the two APIs cannot drift apart in what they accept or do
(tests/unit/test_grpc_proto.py compares their fields). What REST takes from the bearer token, gRPC takes from
``as_user``: the call acts as that user, under that user's permissions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
from pydantic import ValidationError

from flare_im.api import http
from flare_im.api.http import ApiContext
from flare_im.grpc_api.events import EventFeed
from flare_im.grpc_api.gen import flare_pb2 as pb
from flare_im.identity import check_id
from flare_im.ids import now_ms
from flare_im.protocol.errors import AccountRefused, ErrorCode, FlareError, invalid
from flare_im.protocol.frames import Message
from flare_im.protocol.values import check_body
from flare_im.services.content_filter import stored_if_filtered
from flare_im.services.conversations import DIRECT, ConversationService, parse_conv
from flare_im.services.message_kinds import check_size
from flare_im.services.operations import RECALL

log = logging.getLogger(__name__)

SYSTEM_SENDER = ""  # the sender of a system message a backend sends: no user
NOTICE = "notice"  # its body.event
MAX_SUBSCRIPTIONS = 256  # open Subscribe streams per node; beyond: RESOURCE_EXHAUSTED

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


@dataclass(slots=True)
class GrpcContext:
    api: ApiContext  # the services the REST API uses
    conversations: ConversationService
    feed: EventFeed
    node: str
    max_body_bytes: int


class FlareService:
    """The handlers, one per rpc of ``flare.v1.Flare``: ``async (request) -> response`` (Subscribe: an async
    iterator). They raise FlareError or pydantic's ValidationError; server.py turns those into statuses."""

    def __init__(self, ctx: GrpcContext) -> None:
        self._ctx = ctx
        self._api = ctx.api
        self._system_sends: dict[str, asyncio.Future[tuple[Message, bool]]] = {}  # cmid -> the send under way
        self.closing = False

    # ------------------------------------------------------------------ users

    async def CreateUser(self, request: pb.CreateUserRequest) -> pb.User:
        body = http.AdminUserBody(user_id=request.user_id, display_name=request.display_name, avatar=request.avatar)
        user = await self._api.users.create_by_admin(body.user_id, body.display_name, body.avatar)
        return pb.User(user_id=user.uid, display_name=user.display_name, avatar=user.avatar, created_at=user.created_at)

    async def ImportUsers(self, request: pb.ImportUsersRequest) -> pb.ImportUsersResponse:
        body = http.AdminUsersBody.model_validate(
            {
                "users": [
                    {"user_id": u.user_id, "display_name": u.display_name, "avatar": u.avatar} for u in request.users
                ]
            }
        )
        created, existing = await self._api.users.import_by_admin(
            [(u.user_id, u.display_name, u.avatar) for u in body.users]
        )
        return pb.ImportUsersResponse(created=created, existing=existing)

    async def IssueTokens(self, request: pb.IssueTokensRequest) -> pb.IssueTokensResponse:
        ttl = request.ttl_s if request.HasField("ttl_s") else None
        body = http.AdminTokensBody(user_ids=list(request.user_ids), ttl_s=ttl)
        tokens = await self._api.users.issue_tokens_by_admin(body.user_ids, body.ttl_s)
        return pb.IssueTokensResponse(
            tokens=tokens, token_type="Bearer", expires_in=body.ttl_s or self._api.auth.access_ttl_s
        )

    # ------------------------------------------------------------------ groups

    async def CreateGroup(self, request: pb.CreateGroupRequest) -> pb.Group:
        owner = await self._as_user(request.as_user)
        body = http.GroupCreateBody(
            name=request.name,
            avatar=request.avatar,
            members=list(request.members),
            group_id=request.group_id if request.HasField("group_id") else None,
        )
        info = await self._api.groups.create(
            owner, name=body.name, avatar=body.avatar, members=body.members, gid=body.group_id
        )
        return _group(info)

    async def GetGroup(self, request: pb.GetGroupRequest) -> pb.Group:
        uid = await self._as_user(request.as_user)
        return _group(await self._api.groups.info(uid, check_id(request.group_id, "group id")))

    async def ListMembers(self, request: pb.ListMembersRequest) -> pb.ListMembersResponse:
        uid = await self._as_user(request.as_user)
        members = await self._api.groups.members(uid, check_id(request.group_id, "group id"))
        return pb.ListMembersResponse(
            items=[pb.Member(user_id=m.uid, role=m.role, join_seq=m.join_seq) for m in members]
        )

    async def AddMembers(self, request: pb.AddMembersRequest) -> pb.AddMembersResponse:
        uid = await self._as_user(request.as_user)
        body = http.MembersBody(user_ids=list(request.user_ids))
        added = await self._api.groups.add_members(uid, check_id(request.group_id, "group id"), body.user_ids)
        return pb.AddMembersResponse(added=added)

    async def RemoveMember(self, request: pb.RemoveMemberRequest) -> pb.RemoveMemberResponse:
        uid = await self._as_user(request.as_user)
        gid = check_id(request.group_id, "group id")
        await self._api.groups.remove_member(uid, gid, check_id(request.user_id, "user id"))
        return pb.RemoveMemberResponse()

    # ------------------------------------------------------------------ messages

    async def SendMessage(self, request: pb.SendMessageRequest) -> pb.SendResult:
        uid = await self._as_user(request.as_user)
        conv = _conv(request.conv)
        body = http.SendBody(cmid=request.cmid, kind=request.kind or "text", body=_json_object(request.body_json))
        check_body(body.body)
        message, duplicate = await self._api.router.send(uid, conv, body.cmid, body.kind, body.body)
        result = _send_result(message, duplicate)
        if (stored := stored_if_filtered(body.body, message.body)) is not None:
            result.body_json = _json_encode(stored).decode()
        return result

    async def SendSystemMessage(self, request: pb.SendSystemMessageRequest) -> pb.SendResult:
        conv = _conv(request.conv)
        cmid = request.cmid
        if not 1 <= len(cmid) <= 64:
            raise invalid("cmid must be 1-64 characters")
        body = _json_object(request.body_json)
        check_body(body)
        if "event" in body:
            raise invalid(f"body.event is set by the server ({NOTICE!r})")
        body = {"event": NOTICE, **body}
        check_size(body, self._ctx.max_body_bytes)
        # Concurrent retries of one cmid share one send; a later retry finds it by the router's idempotency.
        pending = self._system_sends.get(cmid)
        if pending is not None:
            message, _ = await asyncio.shield(pending)
            return _send_result(message, True)
        task = asyncio.ensure_future(self._send_system(conv, cmid, body))
        self._system_sends[cmid] = task
        task.add_done_callback(lambda _: self._system_sends.pop(cmid, None))
        message, duplicate = await asyncio.shield(task)
        return _send_result(message, duplicate)

    async def _send_system(self, conv: str, cmid: str, body: dict[str, Any]) -> tuple[Message, bool]:
        router = self._api.router
        known = await router.retry_of(SYSTEM_SENDER, cmid)
        if known is not None:
            if known.conv != conv:
                raise FlareError(ErrorCode.CONFLICT, f"cmid {cmid!r} was used for a message to {known.conv}")
            return known, True
        ref = parse_conv(conv)
        if ref.kind == DIRECT:  # creates the conversation if need be; 404 if a user does not exist
            recipients = await self._ctx.conversations.recipients_for_send(ref.users[0], conv)
        else:
            recipients = [m.uid for m in await self._ctx.conversations.members(conv)]
        return await router.send_system(SYSTEM_SENDER, conv, body, recipients, cmid=cmid), False

    async def GetHistory(self, request: pb.GetHistoryRequest) -> pb.MessagesPage:
        uid = await self._as_user(request.as_user)
        conv = _conv(request.conv)
        after = request.after if request.HasField("after") else None
        before = request.before if request.HasField("before") else None
        limit = request.limit or 50
        for name, value, low, high in (("after", after, 0, http.MAX_INT), ("before", before, 0, http.MAX_INT)):
            if value is not None and not low <= value <= high:
                raise invalid(f"{name} must be in {low}..{high}")
        if not 1 <= limit <= 500:
            raise invalid("limit must be in 1..500")
        page = await self._api.sync.messages(uid, conv, after=after, before=before, limit=limit)
        return pb.MessagesPage(
            conv=page.conv,
            items=[message_pb(m) for m in page.items],
            max_seq=page.max_seq,
            min_seq=page.min_seq,
            more=page.more,
        )

    async def RecallMessage(self, request: pb.RecallMessageRequest) -> pb.OpResult:
        uid = await self._as_user(request.as_user)
        conv = _conv(request.conv)
        body = http.OpBody(op="recall", opid=request.opid)
        if not 1 <= request.seq <= http.MAX_INT:
            raise invalid(f"seq must be in 1..{http.MAX_INT}")
        result = await self._api.operations.apply(uid, conv, RECALL, request.seq, body.opid)
        event = result.event
        return pb.OpResult(
            conv=event.conv,
            seq=event.seq,
            msg_id=event.msg_id,
            ts=event.ts,
            duplicate=result.duplicate,
            target=result.target,
            version=result.version,
        )

    # ------------------------------------------------------------------ events

    async def Subscribe(self, request: pb.SubscribeRequest) -> AsyncIterator[pb.Event]:
        convs = [_conv(c) for c in request.convs]
        feed = self._ctx.feed
        if self.closing:
            raise FlareError(ErrorCode.UNAVAILABLE, "server shutting down; subscribe again elsewhere or later")
        if len(feed) >= MAX_SUBSCRIPTIONS:
            raise FlareError(ErrorCode.RATE_LIMITED, f"this node serves at most {MAX_SUBSCRIPTIONS} subscriptions")
        subscription = await feed.subscribe(convs)
        try:
            yield pb.Event(subscribed=pb.Subscribed(node=self._ctx.node, ts=now_ms()))
            while True:
                message = await subscription.queue.get()
                if message is None:
                    if subscription.overflowed:
                        raise FlareError(
                            ErrorCode.RATE_LIMITED,
                            f"more than {subscription.max_queue} events waited for this subscriber: resume by"
                            " reading history after the last seq seen in each conversation",
                        )
                    raise FlareError(ErrorCode.UNAVAILABLE, "server shutting down; subscribe again and read history")
                yield pb.Event(message=message_pb(message))
        finally:
            await feed.unsubscribe(subscription)

    def end_streams(self) -> None:
        self._ctx.feed.end_all()

    # ------------------------------------------------------------------ helpers

    async def _as_user(self, as_user: str) -> str:
        """The user a call acts as, normalised; 404 if there is no such user (REST's token names a real one)."""
        uid = check_id(as_user, "as_user")
        await self._api.users.get(uid)
        if self._api.admin is not None:  # a banned or deleted account cannot be acted as
            try:
                self._api.admin.gate(uid, False)
            except AccountRefused as exc:  # 403: the caller's key is good, the account it acts as is refused
                raise FlareError(ErrorCode.FORBIDDEN, exc.message, retryable=False, detail=exc.detail) from None
        return uid


def _conv(conv: str) -> str:
    parse_conv(conv)
    return conv


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = _json_decode(text) if text else None
    except msgspec.DecodeError as exc:
        raise invalid(f"body_json is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise invalid("body_json must be a JSON object")
    return value


def _group(info: Any) -> pb.Group:
    g = info.group
    return pb.Group(
        group_id=g.gid,
        conv=info.conv,
        name=g.name,
        avatar=g.avatar,
        owner=g.owner,
        created_at=g.created_at,
        member_count=info.member_count,
    )


def _send_result(message: Message, duplicate: bool) -> pb.SendResult:
    return pb.SendResult(conv=message.conv, seq=message.seq, msg_id=message.msg_id, ts=message.ts, duplicate=duplicate)


def message_pb(m: Message) -> pb.Message:
    return pb.Message(
        conv=m.conv,
        seq=m.seq,
        msg_id=m.msg_id,
        sender=m.sender,
        cmid=m.cmid,
        kind=m.kind,
        body_json=_json_encode(m.body).decode(),
        ts=m.ts,
        version=m.version,
        state=m.state,
        edited_at=m.edited_at,
        reactions={emoji: pb.UserIds(user_ids=users) for emoji, users in m.reactions.items()},
    )


def validation_message(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``field: problem; ...``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)
