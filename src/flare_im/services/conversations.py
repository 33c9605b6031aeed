"""Conversation ids and membership: who may send to and read a conversation, and who receives it.

Membership of the conversations a process used most recently is cached in memory (group members with
role and join seq; direct conversations known to exist), so the send path does no storage read for them.
Every membership change goes through this service, which keeps the cache in step. The cache holds member
lists of at most ``max_group_members`` members in all (one larger group is still kept alone) and at most
``max_direct`` direct conversations, least recently used dropped first; a dropped one is read from the store
again on its next use, exactly as on a cold start.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from flare_im.backends.relational.base import Member, MembershipStore, UserStore
from flare_im.identity import ID_RULE, check_id, is_normal_id, normalize_id
from flare_im.protocol.errors import ErrorCode, FlareError, forbidden, invalid, not_found

__all__ = ["check_id", "direct_conv", "group_conv", "parse_conv"]

DIRECT = "direct"
GROUP = "group"
DEFAULT_MAX_GROUP_MEMBERS = 1_000_000
DEFAULT_MAX_DIRECT = 100_000


def direct_conv(a: str, b: str) -> str:
    """The direct conversation of two users, from their ids in normal form (flare_im.identity)."""
    lo, hi = sorted((normalize_id(a) or a, normalize_id(b) or b))
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
    """Parse and validate a conversation id; FlareError 422 if it is not one. The ids in it must be in normal
    form (flare_im.identity): ``d:Alice:bob`` is refused with the id to use instead (``d:alice:bob``)."""
    parts = conv.split(":")
    if len(parts) == 3 and parts[0] == "d" and is_normal_id(parts[1]) and is_normal_id(parts[2]):
        if parts[1] >= parts[2]:
            raise invalid(f"direct conversation id must be d:<a>:<b> with a < b (sorted): {conv!r}")
        return ConvRef(conv, DIRECT, users=(parts[1], parts[2]))
    if len(parts) == 2 and parts[0] == "g" and is_normal_id(parts[1]):
        return ConvRef(conv, GROUP, gid=parts[1])
    normal = _normal_conv(parts)
    if normal is not None and normal != conv:
        raise invalid(f"conversation ids hold user and group ids in normal form ({ID_RULE}): use {normal!r}")
    raise invalid(f"not a conversation id (d:<a>:<b> or g:<gid>): {conv!r}")


def _normal_conv(parts: list[str]) -> str | None:
    ids = [normalize_id(p) for p in parts[1:]]
    if any(i is None for i in ids):
        return None
    if len(parts) == 3 and parts[0] == "d" and ids[0] != ids[1]:
        return direct_conv(parts[1], parts[2])
    if len(parts) == 2 and parts[0] == "g":
        return group_conv(str(ids[0]))
    return None


@dataclass(slots=True)
class _GroupCache:
    members: dict[str, Member]  # uid -> member (current members only)
    loaded_at: float = 0.0


class ConversationService:
    def __init__(
        self,
        users: UserStore,
        memberships: MembershipStore,
        *,
        group_cache_ttl_s: float = 0.0,
        max_group_members: int = DEFAULT_MAX_GROUP_MEMBERS,
        max_direct: int = DEFAULT_MAX_DIRECT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``group_cache_ttl_s``: how long a group's member list is trusted (0: until this process changes
        it, right for one node; with several nodes another node may change it, so it is re-read);
        ``max_group_members``: members of the group lists kept, all lists together; ``max_direct``: direct
        conversations kept (the least recently used beyond them are dropped and read again when next used);
        ``clock``: monotonic seconds for that ttl (tests pass one they advance by hand)."""
        if max_group_members < 1 or max_direct < 1:
            raise ValueError("max_group_members and max_direct must be at least 1")
        self._group_ttl_s = group_cache_ttl_s
        self._max_group_members = max_group_members
        self._group_members = 0  # members in the cached lists
        self._max_direct = max_direct
        self._clock = clock
        self._users = users
        self._memberships = memberships
        self._groups: OrderedDict[str, _GroupCache] = OrderedDict()  # least recently used first
        self._direct_known: OrderedDict[str, tuple[str, ...]] = OrderedDict()  # conversation -> its two users
        self._direct_pending: dict[str, asyncio.Future[tuple[str, ...]]] = {}

    # ------------------------------------------------------------------ send path

    async def recipients_for_send(self, sender: str, conv: str) -> list[str]:
        """Users who receive a message ``sender`` sends to ``conv`` (sender included); raises FlareError
        403 if the sender may not send there, 404 if the peer or the group does not exist."""
        if conv.startswith("d:"):
            known = self._direct_known
            users = known.get(conv)
            if users is None:
                ref = parse_conv(conv)
                if sender not in ref.users:
                    raise forbidden("not a member of this conversation")
                users = await self._ensure_direct(ref)
            else:
                known.move_to_end(conv)
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
        known = self._direct_known
        known[ref.conv] = ref.users
        known.move_to_end(ref.conv)
        if len(known) > self._max_direct:
            known.popitem(last=False)
        return ref.users

    async def _group(self, conv: str) -> _GroupCache:
        cached = self._groups.get(conv)
        if cached is not None and self._group_ttl_s and self._clock() - cached.loaded_at > self._group_ttl_s:
            cached = None
        if cached is None:
            parse_conv(conv)
            members = await self._memberships.list_members(conv)
            if not members:
                raise not_found("no such group")
            cached = _GroupCache({m.uid: m for m in members}, self._clock())
            self._keep_group(conv, cached)
        else:
            self._groups.move_to_end(conv)
        return cached

    def _keep_group(self, conv: str, cached: _GroupCache) -> None:
        groups = self._groups
        old = groups.pop(conv, None)
        if old is not None:
            self._group_members -= len(old.members)
        groups[conv] = cached
        self._group_members += len(cached.members)
        self._trim_groups()

    def _trim_groups(self) -> None:
        groups = self._groups
        while self._group_members > self._max_group_members and len(groups) > 1:
            _, dropped = groups.popitem(last=False)
            self._group_members -= len(dropped.members)

    # ------------------------------------------------------------------ reads

    async def member_for_read(self, uid: str, conv: str) -> Member:
        """The reader's current membership row; FlareError 403 if ``uid`` may not read ``conv``, 404 if the
        peer or the group does not exist (the same rule as for sending)."""
        ref = parse_conv(conv)
        if ref.kind == DIRECT and uid not in ref.users:
            raise forbidden("not a member of this conversation")
        member = await self._memberships.get_member(conv, uid)
        if member is None:
            if ref.kind == DIRECT:
                # A direct conversation nobody has written to yet: readable and empty if the peer exists.
                if conv not in self._direct_known and len(await self._users.get_users(ref.users)) != 2:
                    raise not_found("no such user")
                return Member(conv=conv, uid=uid)
            if await self._memberships.list_members(conv):
                raise forbidden("not a member of this conversation")
            raise not_found("no such group")
        if member.left:
            raise forbidden("no longer a member of this conversation")
        return member

    def cached_role(self, conv: str, uid: str) -> str | None:
        """``uid``'s role in the group ``conv`` if its member list is cached (it is right after a send's
        ``recipients_for_send``), else None. No storage read: for checks on the send path."""
        cached = self._groups.get(conv)
        member = cached.members.get(uid) if cached is not None else None
        return member.role if member is not None else None

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
        now = self._clock()
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
                if m.uid not in cached.members:
                    self._group_members += 1
                cached.members[m.uid] = m
        self._trim_groups()

    async def remove_member(self, conv: str, uid: str, version: int) -> None:
        await self._memberships.set_left(conv, uid, version)
        cached = self._groups.get(conv)
        if cached is not None and cached.members.pop(uid, None) is not None:
            self._group_members -= 1

    async def set_role(self, conv: str, uid: str, role: str, version: int) -> None:
        await self._memberships.set_role(conv, uid, role, version)
        cached = self._groups.get(conv)
        if cached is not None and uid in cached.members:
            old = cached.members[uid]
            cached.members[uid] = Member(conv=conv, uid=uid, role=role, join_seq=old.join_seq, version=version)
