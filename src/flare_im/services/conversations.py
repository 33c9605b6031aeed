"""Conversation ids and membership: who may send to and read a conversation, and who receives it.

Membership of every conversation a process has touched is cached in memory (group members with role
and join seq; direct conversations known to exist), so the send path does no storage read for it.
Every membership change goes through this service, which keeps the cache in step.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from flare_im.backends.relational.base import Member, MembershipStore, UserStore
from flare_im.protocol.errors import ErrorCode, FlareError, forbidden, invalid, not_found

ID_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
DIRECT = "direct"
GROUP = "group"


def check_id(value: str, what: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise invalid(f"{what} must be 1-64 characters of A-Z a-z 0-9 _ . @ -")
    return value


def direct_conv(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return f"d:{lo}:{hi}"


def group_conv(gid: str) -> str:
    return f"g:{gid}"


@dataclass(frozen=True, slots=True)
class ConvRef:
    conv: str
    kind: str  # DIRECT | GROUP
    users: tuple[str, ...] = ()  # direct: the two users
    gid: str = ""


def parse_conv(conv: str) -> ConvRef:
    """Parse and validate a conversation id; FlareError 422 if it is not one."""
    parts = conv.split(":")
    if len(parts) == 3 and parts[0] == "d" and ID_PATTERN.fullmatch(parts[1]) and ID_PATTERN.fullmatch(parts[2]):
        if parts[1] >= parts[2]:
            raise invalid(f"direct conversation id must be d:<a>:<b> with a < b (sorted): {conv!r}")
        return ConvRef(conv, DIRECT, users=(parts[1], parts[2]))
    if len(parts) == 2 and parts[0] == "g" and ID_PATTERN.fullmatch(parts[1]):
        return ConvRef(conv, GROUP, gid=parts[1])
    raise invalid(f"not a conversation id (d:<a>:<b> or g:<gid>): {conv!r}")


@dataclass(slots=True)
class _GroupCache:
    members: dict[str, Member]  # uid -> member (current members only)
    loaded_at: float = 0.0


class ConversationService:
    def __init__(self, users: UserStore, memberships: MembershipStore, *, group_cache_ttl_s: float = 0.0) -> None:
        """``group_cache_ttl_s``: how long a group's member list is trusted (0: until this process changes
        it, right for one node; with several nodes another node may change it, so it is re-read)."""
        self._group_ttl_s = group_cache_ttl_s
        self._users = users
        self._memberships = memberships
        self._groups: dict[str, _GroupCache] = {}
        self._direct_known: dict[str, tuple[str, ...]] = {}  # conversation -> its two users
        self._direct_pending: dict[str, asyncio.Future[tuple[str, ...]]] = {}

    # ------------------------------------------------------------------ send path

    async def recipients_for_send(self, sender: str, conv: str) -> list[str]:
        """Users who receive a message ``sender`` sends to ``conv`` (sender included); raises FlareError
        403 if the sender may not send there, 404 if the peer or the group does not exist."""
        if conv.startswith("d:"):
            users = self._direct_known.get(conv)
            if users is None:
                ref = parse_conv(conv)
                if sender not in ref.users:
                    raise forbidden("not a member of this conversation")
                users = await self._ensure_direct(ref)
            if sender != users[0] and sender != users[1]:
                raise forbidden("not a member of this conversation")
            return list(users)
        group = await self._group(conv)
        if sender not in group.members:
            raise forbidden("not a member of this conversation")
        return list(group.members)

    async def _ensure_direct(self, ref: ConvRef) -> tuple[str, ...]:
        # Concurrent first sends of one conversation share a single check-and-create.
        pending = self._direct_pending.get(ref.conv)
        if pending is None:
            pending = asyncio.ensure_future(self._create_direct(ref))
            self._direct_pending[ref.conv] = pending
            pending.add_done_callback(lambda _: self._direct_pending.pop(ref.conv, None))
        return await asyncio.shield(pending)

    async def _create_direct(self, ref: ConvRef) -> tuple[str, ...]:
        existing = await self._users.get_users(ref.users)
        if len(existing) != 2:
            raise not_found("no such user")
        missing = [u for u in ref.users if await self._memberships.get_member(ref.conv, u) is None]
        if missing:
            await self._memberships.add_members([Member(conv=ref.conv, uid=u) for u in missing])
        self._direct_known[ref.conv] = ref.users
        return ref.users

    async def _group(self, conv: str) -> _GroupCache:
        cached = self._groups.get(conv)
        if cached is not None and self._group_ttl_s and time.monotonic() - cached.loaded_at > self._group_ttl_s:
            cached = None
        if cached is None:
            parse_conv(conv)
            members = await self._memberships.list_members(conv)
            if not members:
                raise not_found("no such group")
            cached = _GroupCache({m.uid: m for m in members}, time.monotonic())
            self._groups[conv] = cached
        return cached

    # ------------------------------------------------------------------ reads

    async def member_for_read(self, uid: str, conv: str) -> Member:
        """The reader's current membership row; FlareError 403 if ``uid`` may not read ``conv``."""
        ref = parse_conv(conv)
        if ref.kind == DIRECT and uid not in ref.users:
            raise forbidden("not a member of this conversation")
        member = await self._memberships.get_member(conv, uid)
        if member is None:
            if ref.kind == DIRECT:
                # A direct conversation nobody has written to yet: readable, empty.
                return Member(conv=conv, uid=uid)
            if await self._memberships.list_members(conv):
                raise forbidden("not a member of this conversation")
            raise not_found("no such group")
        if member.left:
            raise forbidden("no longer a member of this conversation")
        return member

    async def members(self, conv: str) -> list[Member]:
        return list((await self._group(conv)).members.values())

    async def member_count(self, conv: str) -> int:
        if conv.startswith("d:"):
            return 2
        try:
            return len((await self._group(conv)).members)
        except FlareError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                return 0
            raise

    async def member_counts(self, convs: list[str]) -> dict[str, int]:
        """Member counts of many conversations: direct ones are 2, groups come from the cache where it is
        fresh and from one query for the rest (a group that does not exist counts 0)."""
        counts: dict[str, int] = {}
        unknown: list[str] = []
        now = time.monotonic()
        for conv in convs:
            if conv.startswith("d:"):
                counts[conv] = 2
                continue
            cached = self._groups.get(conv)
            if cached is not None and not (self._group_ttl_s and now - cached.loaded_at > self._group_ttl_s):
                counts[conv] = len(cached.members)
            else:
                unknown.append(conv)
        if unknown:
            found = await self._memberships.count_members(unknown)
            counts.update((conv, found.get(conv, 0)) for conv in unknown)
        return counts

    # ------------------------------------------------------------------ membership changes

    async def add_members(self, members: list[Member]) -> None:
        await self._memberships.add_members(members)
        for m in members:
            cached = self._groups.get(m.conv)
            if cached is not None:
                cached.members[m.uid] = m

    async def remove_member(self, conv: str, uid: str, version: int) -> None:
        await self._memberships.set_left(conv, uid, version)
        cached = self._groups.get(conv)
        if cached is not None:
            cached.members.pop(uid, None)

    async def set_role(self, conv: str, uid: str, role: str, version: int) -> None:
        await self._memberships.set_role(conv, uid, role, version)
        cached = self._groups.get(conv)
        if cached is not None and uid in cached.members:
            old = cached.members[uid]
            cached.members[uid] = Member(conv=conv, uid=uid, role=role, join_seq=old.join_seq, version=version)
