"""Groups: create, info, members and roles. Every change is also a system notice in the group's log."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.relational.base import AlreadyExists, Group, GroupStore, Member, UserStore
from flare_im.identity import check_text
from flare_im.ids import VersionClock, now_ms
from flare_im.protocol.errors import ErrorCode, FlareError, forbidden, invalid, not_found
from flare_im.services.conversations import ConversationService, check_id, group_conv
from flare_im.services.router import MessageRouter

OWNER, ADMIN, MEMBER = "owner", "admin", "member"
ROLES = (OWNER, ADMIN, MEMBER)
MAX_NAME = 128
MAX_AVATAR = 1024


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group: Group
    member_count: int
    conv: str


class GroupService:
    def __init__(
        self,
        *,
        groups: GroupStore,
        users: UserStore,
        conversations: ConversationService,
        router: MessageRouter,
        log: MessageLog,
        clock: VersionClock,
        max_members: int = 10_000,
        limit_of: Callable[[str], Awaitable[int]] | None = None,
    ) -> None:
        """``max_members``: the server's member limit; ``limit_of(conv)``: a group's own limit where it has one
        (services/joins.py), else 0."""
        self._groups = groups
        self._users = users
        self._conversations = conversations
        self._router = router
        self._log = log
        self._clock = clock
        self._max_members = max_members
        self._limit_of = limit_of

    async def create(
        self, owner: str, *, name: str, avatar: str = "", members: list[str], gid: str | None = None
    ) -> GroupInfo:
        _check_info(name, avatar)
        gid = check_id(gid, "group id") if gid else secrets.token_hex(8)
        others = [u for u in dict.fromkeys(_user_ids(members)) if u != owner]
        if len(others) + 1 > self._max_members:
            raise invalid(f"a group holds at most {self._max_members} members")
        await self._require_users(others)
        conv = group_conv(gid)
        group = Group(gid=gid, name=name, avatar=avatar, owner=owner, created_at=now_ms())

        def rows(version: int) -> list[Member]:
            return [Member(conv=conv, uid=owner, role=OWNER, version=version)] + [
                Member(conv=conv, uid=u, role=MEMBER, version=version) for u in others
            ]

        try:
            await self._clock.stamped(lambda v: self._groups.create_group(group, rows(v)))
        except AlreadyExists:
            raise FlareError(ErrorCode.CONFLICT, f"group {gid!r} already exists") from None
        await self._router.send_system(
            owner,
            conv,
            {"event": "group_created", "actor": owner, "name": name, "users": [owner, *others]},
            [owner, *others],
        )
        return GroupInfo(group, len(others) + 1, conv)

    async def info(self, uid: str, gid: str) -> GroupInfo:
        conv = group_conv(check_id(gid, "group id"))
        await self._conversations.member_for_read(uid, conv)
        group = await self._groups.get_group(gid)
        if group is None:
            raise not_found("no such group")
        return GroupInfo(group, await self._conversations.member_count(conv), conv)

    async def members(self, uid: str, gid: str) -> list[Member]:
        conv = group_conv(check_id(gid, "group id"))
        await self._conversations.member_for_read(uid, conv)
        return await self._conversations.members(conv)

    async def update(self, actor: str, gid: str, *, name: str | None, avatar: str | None) -> GroupInfo:
        conv = group_conv(check_id(gid, "group id"))
        await self._require_role(actor, conv, (OWNER, ADMIN))
        _check_info(name if name is not None else "x", avatar or "")
        await self._groups.update_group(gid, name=name, avatar=avatar)
        body: dict[str, object] = {"event": "group_updated", "actor": actor}
        if name is not None:
            body["name"] = name
        if avatar is not None:
            body["avatar"] = avatar
        await self._notify(actor, conv, body)
        return await self.info(actor, gid)

    async def add_members(self, actor: str, gid: str, uids: list[str]) -> list[str]:
        """Add users (owner/admin only); returns those that were not members yet."""
        conv = group_conv(check_id(gid, "group id"))
        uids = _user_ids(uids)
        await self._require_role(actor, conv, (OWNER, ADMIN))
        current = {m.uid for m in await self._conversations.members(conv)}
        new = [u for u in dict.fromkeys(uids) if u not in current]
        if not new:
            return []
        limit = (await self._limit_of(conv) if self._limit_of is not None else 0) or self._max_members
        if len(current) + len(new) > limit:
            raise invalid(f"this group holds at most {limit} members")
        await self._require_users(new)
        join_seq = await self._log.max_seq(conv)
        await self._clock.stamped(
            lambda v: self._conversations.add_members(
                [Member(conv=conv, uid=u, role=MEMBER, join_seq=join_seq, read_seq=join_seq, version=v) for u in new]
            )
        )
        await self._notify(actor, conv, {"event": "members_added", "actor": actor, "users": new})
        return new

    async def remove_member(self, actor: str, gid: str, uid: str) -> None:
        conv = group_conv(check_id(gid, "group id"))
        uid = check_id(uid, "user id")
        actor_role = await self._require_role(actor, conv, (OWNER, ADMIN))
        target = await self._role_of(uid, conv)
        if target is None:
            raise not_found("not a member of this group")
        if uid == actor:
            raise invalid("use leave to leave a group")
        if target == OWNER or (target == ADMIN and actor_role != OWNER):
            raise forbidden(f"an {actor_role} cannot remove an {target}")
        # The removed member hears of it too, but only once it is recorded: a client that syncs on the notice must
        # find itself gone.
        recipients = [m.uid for m in await self._conversations.members(conv)]
        await self._clock.stamped(lambda v: self._conversations.remove_member(conv, uid, v))
        body = {"event": "member_removed", "actor": actor, "users": [uid]}
        await self._router.send_system(actor, conv, body, recipients)

    async def leave(self, uid: str, gid: str) -> None:
        conv = group_conv(check_id(gid, "group id"))
        role = await self._require_role(uid, conv, ROLES)
        if role == OWNER:
            # Ownership passes to the longest-standing admin, else the longest-standing member.
            rest = [m for m in await self._conversations.members(conv) if m.uid != uid]
            heir = next((m for m in rest if m.role == ADMIN), rest[0] if rest else None)
            if heir is not None:
                await self._clock.stamped(lambda v: self._conversations.set_role(conv, heir.uid, OWNER, v))
                await self._notify(
                    uid, conv, {"event": "role_changed", "actor": uid, "users": [heir.uid], "role": OWNER}
                )
        recipients = [m.uid for m in await self._conversations.members(conv)]
        await self._clock.stamped(lambda v: self._conversations.remove_member(conv, uid, v))
        await self._router.send_system(uid, conv, {"event": "member_left", "actor": uid, "users": [uid]}, recipients)

    async def set_role(self, actor: str, gid: str, uid: str, role: str) -> None:
        """Owner only. Giving ``owner`` transfers ownership (the old owner becomes admin)."""
        if role not in ROLES:
            raise invalid(f"role must be one of {', '.join(ROLES)}")
        conv = group_conv(check_id(gid, "group id"))
        uid = check_id(uid, "user id")
        await self._require_role(actor, conv, (OWNER,))
        if await self._role_of(uid, conv) is None:
            raise not_found("not a member of this group")
        if uid == actor:
            raise invalid("the owner changes its role by giving ownership to another member")
        await self._clock.stamped(lambda v: self._conversations.set_role(conv, uid, role, v))
        if role == OWNER:
            await self._clock.stamped(lambda v: self._conversations.set_role(conv, actor, ADMIN, v))
        await self._notify(actor, conv, {"event": "role_changed", "actor": actor, "users": [uid], "role": role})

    # ------------------------------------------------------------------ helpers

    async def _notify(self, actor: str, conv: str, body: dict[str, object]) -> None:
        recipients = [m.uid for m in await self._conversations.members(conv)]
        await self._router.send_system(actor, conv, dict(body), recipients)

    async def _role_of(self, uid: str, conv: str) -> str | None:
        for m in await self._conversations.members(conv):
            if m.uid == uid:
                return m.role
        return None

    async def _require_role(self, uid: str, conv: str, allowed: tuple[str, ...]) -> str:
        role = await self._role_of(uid, conv)
        if role is None:
            raise forbidden("not a member of this group")
        if role not in allowed:
            raise forbidden(f"needs role {' or '.join(allowed)}")
        return role

    async def _require_users(self, uids: list[str]) -> None:
        for u in uids:
            check_id(u, "user id")
        found = {u.uid for u in await self._users.get_users(uids)}
        missing = [u for u in uids if u not in found]
        if missing:
            raise not_found(f"no such user: {', '.join(missing[:5])}")


def _user_ids(uids: list[str]) -> list[str]:
    """The ids in normal form (flare_im.identity); FlareError 422 on the first that is not an id."""
    return [check_id(u, "user id") for u in uids]


def _check_info(name: str, avatar: str) -> None:
    check_text(name, "group name")
    check_text(avatar, "avatar")
    if not name.strip() or len(name) > MAX_NAME:
        raise invalid(f"group name must be 1-{MAX_NAME} characters")
    if len(avatar) > MAX_AVATAR:
        raise invalid(f"avatar must be at most {MAX_AVATAR} characters")
