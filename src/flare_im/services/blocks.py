"""Blocking (U3) and group mutes (U2): the changes, kept by the safety port, applied to this node's cache at once
and announced to the others (services/safety.py); the block list is pushed to the blocker's devices.

Blocking works both ways in a direct conversation: once A blocks B, B's direct messages to A are refused with
403 ``reason: blocked`` (B learns of the block: the server does not pretend to deliver), and A's to B with 403
``reason: blocking`` until A unblocks. Nothing is stored, so A's history and max seq show nothing of it.
B's typing notices no longer reach A in any conversation, and B's presence no longer reaches A. Groups they
share are not affected: a block is between two people, a group is the group's.
"""

from __future__ import annotations

from collections.abc import Callable

from flare_im.backends.relational.base import UserStore
from flare_im.backends.safety.base import EVERYONE, FOREVER, Block, BlockStore, GroupMute, MuteStore
from flare_im.identity import check_id
from flare_im.ids import now_ms
from flare_im.protocol.errors import forbidden, invalid, not_found
from flare_im.protocol.frames import BlockList, ServerFrame
from flare_im.services.conversations import ConversationService, group_conv
from flare_im.services.router import MessageRouter
from flare_im.services.safety import ADMIN_ROLES, BLOCKS, MUTES, SafetyCache, SafetySync

Deliver = Callable[[list[str], ServerFrame, tuple[str, str] | None], None]  # hub / cluster: (uids, frame, skip)

DEFAULT_MAX_BLOCKS = 10_000  # users one user may block
MODERATOR = "system"  # the actor of what an administrator does through the report queue (mutes, recalls)
MAX_MUTE_MS = 366 * 24 * 3600 * 1000  # a mute with an end ends within a year; longer is "until lifted"


class BlockService:
    def __init__(
        self,
        store: BlockStore,
        users: UserStore,
        cache: SafetyCache,
        sync: SafetySync,
        deliver: Deliver,
        *,
        max_blocks: int = DEFAULT_MAX_BLOCKS,
    ) -> None:
        self._store = store
        self._users = users
        self._cache = cache
        self._sync = sync
        self._deliver = deliver
        self._max_blocks = max_blocks

    async def blocked(self, uid: str) -> tuple[list[Block], int]:
        """The users ``uid`` blocks (oldest first) and the list's version."""
        return await self._store.blocks_of(uid)

    async def set(self, uid: str, target: str, blocked: bool) -> tuple[list[Block], int]:
        """Block or unblock ``target``; idempotent (blocking twice changes nothing). Every device of ``uid``
        gets the new list as a ``blocks`` frame. Returns the list and its version."""
        target = check_id(target, "user id")
        if target == uid:
            raise forbidden("a user cannot block itself")
        if blocked:
            if not await self._users.get_users([target]):
                raise not_found("no such user")
            current, _ = await self._store.blocks_of(uid)
            if len(current) >= self._max_blocks and all(b.target != target for b in current):
                raise invalid(f"a user blocks at most {self._max_blocks} users")
        version = await self._store.set_block(uid, target, blocked, now_ms())
        found, current_version = await self._store.blocks_of(uid)
        if version:
            self._cache.set_blocks(uid, (b.target for b in found))
            self._sync.changed(BLOCKS, uid)
            self._deliver([uid], BlockList(users=[b.target for b in found], version=current_version), None)
        return found, current_version


class MuteService:
    """Group mutes: one member until a time, or everyone but the owner and admins ("mute all")."""

    def __init__(
        self,
        store: MuteStore,
        conversations: ConversationService,
        router: MessageRouter,
        cache: SafetyCache,
        sync: SafetySync,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._conversations = conversations
        self._router = router
        self._cache = cache
        self._sync = sync
        self._clock = clock

    async def mutes(self, uid: str, gid: str) -> list[GroupMute]:
        """The group's current mutes (any member may see them)."""
        conv = group_conv(check_id(gid, "group id"))
        await self._conversations.member_for_read(uid, conv)
        return await self._store.mutes_of(conv, self._clock())

    async def mute(self, actor: str, gid: str, target: str, until: int | None) -> GroupMute:
        """Mute ``target`` (a member id, or ``*`` for everyone but owner and admins) until epoch ms ``until``
        (None: until lifted). Owner and admins only; an admin cannot mute the owner or another admin."""
        conv = group_conv(check_id(gid, "group id"))
        roles = await self._roles(conv)
        actor_role = require_admin(roles, actor)
        if target != EVERYONE:
            target = check_id(target, "user id")
            role = roles.get(target)
            if role is None:
                raise not_found("not a member of this group")
            if target == actor:
                raise forbidden("a member cannot mute itself")
            if role == "owner" or (role == "admin" and actor_role != "owner"):
                raise forbidden(f"an {actor_role} cannot mute an {role}")
        return await self._apply(conv, target, until, actor, list(roles))

    async def mute_by_moderation(self, conv: str, target: str, until: int | None) -> GroupMute:
        """An administrator (a report's resolution) mutes ``target`` in the group ``conv``: no role check, the
        notice's actor is ``MODERATOR``."""
        roles = await self._roles(conv)
        if target not in roles:
            raise not_found("not a member of this group")
        return await self._apply(conv, target, until, MODERATOR, list(roles))

    async def _apply(self, conv: str, target: str, until: int | None, actor: str, members: list[str]) -> GroupMute:
        now = self._clock()
        if until is None:
            until = FOREVER
        elif until <= now:
            raise invalid("until must be in the future (epoch ms)")
        elif until - now > MAX_MUTE_MS:
            raise invalid("a mute with an end ends within 366 days; leave until out to mute until lifted")
        mute = GroupMute(conv=conv, uid=target, until=until, actor=actor, created_at=now)
        await self._store.set_mute(mute)
        await self._changed(conv)
        body: dict[str, object] = {"event": "group_muted" if target == EVERYONE else "member_muted", "actor": actor}
        if target != EVERYONE:
            body["users"] = [target]
        if until != FOREVER:
            body["until"] = until
        await self._router.send_system(actor, conv, body, members)
        return mute

    async def unmute(self, actor: str, gid: str, target: str) -> None:
        conv = group_conv(check_id(gid, "group id"))
        roles = await self._roles(conv)
        require_admin(roles, actor)
        if target != EVERYONE:
            target = check_id(target, "user id")
        if not await self._store.remove_mute(conv, target):
            raise not_found("no mute to lift")
        await self._changed(conv)
        body: dict[str, object] = {"event": "group_unmuted" if target == EVERYONE else "member_unmuted", "actor": actor}
        if target != EVERYONE:
            body["users"] = [target]
        await self._router.send_system(actor, conv, body, list(roles))

    async def _changed(self, conv: str) -> None:
        self._cache.set_mutes(conv, await self._store.mutes_of(conv, self._clock()))
        self._sync.changed(MUTES, conv)

    async def _roles(self, conv: str) -> dict[str, str]:
        return {m.uid: m.role for m in await self._conversations.members(conv)}


def require_admin(roles: dict[str, str], actor: str) -> str:
    role = roles.get(actor)
    if role is None:
        raise forbidden("not a member of this group")
    if role not in ADMIN_ROLES:
        raise forbidden("needs role owner or admin")
    return role
