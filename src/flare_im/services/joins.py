"""Joining a group by an invite link, directly or with an owner's or admin's approval, and groups' member limits (U2).

A link is made by the owner or an admin: ``max_uses`` (0: unlimited), an end (``expires_at``) and ``approval``.
Joining by a link without approval adds the user at once (a ``member_joined`` notice, ``via: "invite"``); with
approval it makes a pending request that the owner and admins see (``join_request`` frame, and the list), and
an approval adds the user (``via: "approval"``). A use of the link is counted when the user joins or asks, never
twice for one pending request, and given back when the join is refused after all.

Member limit: the server's ``group_max_members`` unless the group has its own (set by an administrator, up to
``MAX_LIMIT``). A join, an approval or an add beyond it is refused (422) and changes nothing. Two joins at the same
instant may both pass the check: the limit holds to within the joins in flight at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.relational.base import Member
from flare_im.backends.safety.base import APPROVED, DENIED, Invite, JoinRequest, JoinStore
from flare_im.identity import check_id
from flare_im.ids import VersionClock, now_ms
from flare_im.protocol.errors import ErrorCode, FlareError, invalid, not_found
from flare_im.protocol.frames import JoinRequestFrame
from flare_im.services.blocks import Deliver, require_admin
from flare_im.services.conversations import ConversationService, group_conv
from flare_im.services.router import MessageRouter

MAX_LIMIT = 1_000_000  # a group's own member limit at most (the member cache's default size)
MAX_INVITE_S = 366 * 24 * 3600
MAX_NOTE = 500
JOINED, PENDING_STATE, MEMBER = "joined", "pending", "member"


def full(limit: int) -> FlareError:
    return FlareError(ErrorCode.INVALID, f"this group holds at most {limit} members", detail={"limit": limit})


class JoinService:
    def __init__(
        self,
        store: JoinStore,
        conversations: ConversationService,
        router: MessageRouter,
        log: MessageLog,
        versions: VersionClock,
        deliver: Deliver,
        *,
        max_members: int,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._conversations = conversations
        self._router = router
        self._log = log
        self._versions = versions
        self._deliver = deliver
        self._max_members = max_members
        self._clock = clock

    async def limit(self, conv: str) -> int:
        return await self._store.group_limit(conv) or self._max_members

    async def limit_of(self, conv: str) -> int:
        """The group's own limit, 0 when it has none (GroupService asks this on every add)."""
        return await self._store.group_limit(conv)

    async def set_limit(self, gid: str, max_members: int) -> int:
        """An administrator sets the group's limit (0: the server's); returns the limit in force. It may be below the
        current member count: nobody is removed, but nobody joins until the group is under it."""
        conv = group_conv(check_id(gid, "group id"))
        if not 0 <= max_members <= MAX_LIMIT:
            raise invalid(f"max_members must be 0 (the server's limit) to {MAX_LIMIT}")
        await self._roles(conv)  # 404 for a group that does not exist
        await self._store.set_group_limit(conv, max_members)
        return await self.limit(conv)

    # ------------------------------------------------------------------ links

    async def create_invite(
        self, actor: str, gid: str, *, max_uses: int = 0, expires_in_s: int = 0, approval: bool = False
    ) -> Invite:
        conv = group_conv(check_id(gid, "group id"))
        require_admin(await self._roles(conv), actor)
        if not 0 <= expires_in_s <= MAX_INVITE_S or max_uses < 0:
            raise invalid(f"expires_in_s must be 0 (never) to {MAX_INVITE_S}, max_uses 0 (unlimited) or more")
        now = self._clock()
        invite = Invite(
            code=secrets.token_urlsafe(12),
            conv=conv,
            creator=actor,
            created_at=now,
            expires_at=now + expires_in_s * 1000 if expires_in_s else 0,
            max_uses=max_uses,
            approval=approval,
        )
        await self._store.put_invite(invite)
        return invite

    async def invites(self, actor: str, gid: str) -> list[Invite]:
        conv = group_conv(check_id(gid, "group id"))
        require_admin(await self._roles(conv), actor)
        return await self._store.invites_of(conv)

    async def revoke(self, actor: str, gid: str, code: str) -> None:
        conv = group_conv(check_id(gid, "group id"))
        require_admin(await self._roles(conv), actor)
        if not await self._store.revoke_invite(conv, code):
            raise not_found("no such invite link in this group")

    async def preview(self, code: str) -> Invite:
        """The link as a joining user may see it (the group it leads to); 404 unknown or revoked, 410 used up or
        expired."""
        invite = await self._store.get_invite(code)
        if invite is None or invite.revoked:
            raise not_found("no such invite link")
        if (invite.expires_at and invite.expires_at <= self._clock()) or (
            invite.max_uses and invite.uses >= invite.max_uses
        ):
            raise FlareError(ErrorCode.GONE, "this invite link has expired or is used up")
        return invite

    async def join(self, uid: str, code: str, note: str = "") -> tuple[str, str, JoinRequest | None]:
        """Join by a link: ``("joined", conv, None)``, ``("pending", conv, request)`` (approval needed) or
        ``("member", conv, None)`` (already a member: nothing counted)."""
        if len(note) > MAX_NOTE:
            raise invalid(f"note must be at most {MAX_NOTE} characters")
        invite = await self._store.get_invite(code)
        if invite is None or invite.revoked:
            raise not_found("no such invite link")
        conv = invite.conv
        roles = await self._roles(conv)
        if uid in roles:  # whatever the link's state: nothing to do
            return MEMBER, conv, None
        await self.preview(code)
        if invite.approval:
            pending = [r for r in await self._store.join_requests(conv) if r.uid == uid]
            if pending:
                return PENDING_STATE, conv, pending[0]
            if await self._store.use_invite(code, self._clock()) is None:
                raise FlareError(ErrorCode.GONE, "this invite link has expired or is used up")
            request = await self._store.add_join_request(JoinRequest(conv, uid, code, note, created_at=self._clock()))
            admins = [u for u, role in roles.items() if role in ("owner", "admin")]
            self._deliver(admins, _frame(request), None)
            return PENDING_STATE, conv, request
        limit = await self.limit(conv)
        if len(roles) + 1 > limit:
            raise full(limit)
        if await self._store.use_invite(code, self._clock()) is None:
            raise FlareError(ErrorCode.GONE, "this invite link has expired or is used up")
        try:
            await self._add(conv, uid)
        except BaseException:
            await self._store.unuse_invite(code)
            raise
        await self._router.send_system(
            uid, conv, {"event": "member_joined", "actor": uid, "users": [uid], "via": "invite"}, [*roles, uid]
        )
        return JOINED, conv, None

    # ------------------------------------------------------------------ approval

    async def requests(self, actor: str, gid: str) -> list[JoinRequest]:
        conv = group_conv(check_id(gid, "group id"))
        require_admin(await self._roles(conv), actor)
        return await self._store.join_requests(conv)

    async def decide(self, actor: str, gid: str, uid: str, approve: bool) -> JoinRequest:
        conv = group_conv(check_id(gid, "group id"))
        uid = check_id(uid, "user id")
        roles = await self._roles(conv)
        require_admin(roles, actor)
        if approve and uid not in roles:
            limit = await self.limit(conv)
            if len(roles) + 1 > limit:
                raise full(limit)  # the request stays pending
        state = APPROVED if approve else DENIED
        decided = await self._store.decide_join_request(conv, uid, state, actor, self._clock())
        if decided is None:
            raise not_found("no pending request of this user")
        if approve and uid not in roles:
            await self._add(conv, uid)
            notice = {"event": "member_joined", "actor": actor, "users": [uid], "via": "approval"}
            await self._router.send_system(actor, conv, notice, [*roles, uid])
        self._deliver([uid], _frame(decided), None)
        return decided

    # ------------------------------------------------------------------ helpers

    async def _add(self, conv: str, uid: str) -> None:
        join_seq = await self._log.max_seq(conv)
        await self._versions.stamped(
            lambda v: self._conversations.add_members(
                [Member(conv=conv, uid=uid, role="member", join_seq=join_seq, read_seq=join_seq, version=v)]
            )
        )

    async def _roles(self, conv: str) -> dict[str, str]:
        return {m.uid: m.role for m in await self._conversations.members(conv)}


def _frame(r: JoinRequest) -> JoinRequestFrame:
    return JoinRequestFrame(group_id=r.conv[2:], user=r.uid, state=r.state, created_at=r.created_at, note=r.note)
