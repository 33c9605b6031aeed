"""Sync (DESIGN.md §4): the conversation list by version, message pages by seq, read/delivered receipts.

The list version of a conversation for a user is the larger of the version of its last message (the
log's head) and the version of the user's own row (read seq, membership, role). Both come from one
clock. Writes commit in batches, so a smaller version can commit after a larger one: the version handed
back for the next sync is never above the clock's ``safe`` version (every write at or below it has
finished). An entry may then be listed twice; none is ever skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass

import msgspec

from flare_im.backends.message_log.base import ConvHead, MessageLog
from flare_im.backends.relational.base import GroupStore, Member, MembershipStore, SettingsChange, UserStore
from flare_im.ids import VersionClock
from flare_im.protocol.errors import ErrorCode, FlareError, invalid
from flare_im.protocol.frames import ConvSettings, ConvSummary, Message, Receipt
from flare_im.services.conversations import DIRECT, GROUP, ConversationService, parse_conv
from flare_im.services.router import Fanout


@dataclass(frozen=True, slots=True)
class ConvPage:
    items: list[ConvSummary]
    version: int
    more: bool


@dataclass(frozen=True, slots=True)
class ReadState:
    """Who has read message ``seq`` of a conversation: derived from each member's read seq."""

    conv: str
    seq: int
    read: list[str]  # members whose read seq reached ``seq`` (the sender excluded)
    unread: list[str]


@dataclass(frozen=True, slots=True)
class MessagePage:
    conv: str
    items: list[Message]
    max_seq: int
    min_seq: int
    more: bool


MAX_DRAFT = 4096
INCREMENTAL, FULL, FAST = "incremental", "full", "fast"


def out_of_range(message: str) -> FlareError:
    return FlareError(ErrorCode.OUT_OF_RANGE, message)


class SyncService:
    def __init__(
        self,
        *,
        conversations: ConversationService,
        memberships: MembershipStore,
        users: UserStore,
        groups: GroupStore,
        log: MessageLog,
        clock: VersionClock,
        fanout: Fanout,
    ) -> None:
        self._conversations = conversations
        self._memberships = memberships
        self._users = users
        self._groups = groups
        self._log = log
        self._clock = clock
        self._fanout = fanout

    async def conversations(
        self, uid: str, *, since: int, limit: int, strategy: str = INCREMENTAL, recent: int = 0
    ) -> ConvPage:
        """One page of the user's conversation list. ``incremental``: entries changed since ``since``, by
        version. ``full``: the same from 0 (a new device). ``fast``: the ``limit`` most recently active
        entries first; its ``version`` is 0, so the client follows with an incremental pass from 0 (which
        may list those entries again). ``recent`` > 0 adds each entry's newest messages, so a new device
        restores its list and recent history in one round trip."""
        if strategy == FULL:
            since = 0
        rows = await self._memberships.list_user_convs(uid)
        heads = await self._log.heads([m.conv for m in rows])
        changed: list[tuple[int, Member]] = []
        for m in rows:
            head = heads.get(m.conv)
            # After leaving, new messages no longer change the entry (nor reveal anything).
            version = m.version if m.left else max(m.version, head.version if head else 0)
            if version > since:
                changed.append((version, m))
        changed.sort(key=lambda vm: vm[0], reverse=strategy == FAST)
        page = changed[:limit]
        mentions = await self._memberships.unread_mentions(uid) if page else {}
        # One round trip each for the page's peers, groups, member counts and "deleted for me" messages, not
        # one per entry.
        peer_ids = [_peer(m.conv, uid) for _, m in page if m.conv.startswith("d:")]
        peers = {u.uid: u for u in await self._users.get_users(peer_ids)} if peer_ids else {}
        gids = [m.conv[2:] for _, m in page if not m.conv.startswith("d:")]
        groups = {g.gid: g for g in await self._groups.get_groups(gids)} if gids else {}
        present = [m.conv for _, m in page if not m.left]
        hidden_by_conv = await self._memberships.hidden_in(uid, present) if present else {}
        member_counts = await self._conversations.member_counts([m.conv for _, m in page])
        newest = await self._newest(page, heads, recent)
        items: list[ConvSummary] = []
        for version, m in page:
            head = None if m.left else heads.get(m.conv)
            read_seq, floor, max_seq = _bounds(m, head)
            summary = ConvSummary(
                conv=m.conv,
                kind=DIRECT if m.conv.startswith("d:") else GROUP,
                version=version,
                max_seq=max_seq,
                read_seq=read_seq,
                unread=0 if m.left else max(0, max_seq - read_seq),
                unread_mentions=0 if m.left else mentions.get(m.conv, 0),
                member_count=member_counts[m.conv],
                join_seq=m.join_seq,
                last=head.last if head and head.last and head.last.seq > floor else None,
                pinned=m.pinned,
                muted=m.muted,
                hidden=m.hidden,
                draft=m.draft,
                cleared_seq=m.cleared_seq,
                left=m.left,
            )
            peer = _peer(m.conv, uid)
            if peer:
                user = peers.get(peer)
                summary.peer = peer
                summary.name = user.display_name if user else peer
                summary.avatar = user.avatar if user else ""
            else:
                group = groups.get(m.conv[2:])
                summary.role = m.role
                if group is not None:
                    summary.name, summary.avatar = group.name, group.avatar
            hidden = hidden_by_conv.get(m.conv, {})
            if not m.left:
                summary.hidden_seqs = sorted(seq for seq, at in hidden.items() if at > since and seq > floor)
                if summary.last is not None:
                    [summary.last] = _tombstones([summary.last], hidden)
            if m.conv in newest:
                summary.recent = _tombstones(newest[m.conv], hidden)
            items.append(summary)
        more = len(changed) > limit
        version = since
        if strategy == FAST:
            version = 0
        elif page:
            version = min(page[-1][0], self._clock.safe)
            if version <= since and more:  # a stuck write must not stall paging
                version = page[-1][0]
            version = max(version, since)
        return ConvPage(items=items, version=version, more=more)

    async def messages(self, uid: str, conv: str, *, after: int | None, before: int | None, limit: int) -> MessagePage:
        member = await self._conversations.member_for_read(uid, conv)
        max_seq = await self._log.max_seq(conv)
        floor = max(member.join_seq, member.cleared_seq)  # the member reads seq > floor
        if after is not None and after > max_seq:
            raise out_of_range(f"after={after} is beyond the conversation's max seq {max_seq}")
        if before is not None and before > max_seq + 1:
            raise out_of_range(f"before={before} is beyond the conversation's max seq {max_seq} + 1")
        if after is not None and before is not None and after >= before:
            raise invalid("after must be smaller than before")
        if floor and ((after is not None and 0 < after < floor) or (before is not None and before <= floor)):
            # The client holds messages this user can no longer read (history cleared, or rejoined): a
            # silent page from the floor would hide that. It resyncs from min_seq.
            raise FlareError(
                ErrorCode.GONE,
                f"messages up to seq {floor} are no longer available to this user; resync from {floor + 1}",
                detail={"min_seq": floor + 1, "max_seq": max_seq},
            )
        hi = before if before is not None else max_seq + 1
        if after is not None:
            items = await self._log.range(conv, after=max(after, floor), before=hi, limit=limit, newest=False)
            more = len(items) == limit and items[-1].seq < hi - 1
        else:
            items = await self._log.range(conv, after=floor, before=hi, limit=limit, newest=True)
            more = len(items) == limit and items[0].seq > floor + 1
        items = await self._hide(uid, conv, items)
        return MessagePage(conv=conv, items=items, max_seq=max_seq, min_seq=floor + 1, more=more)

    async def _newest(
        self, page: list[tuple[int, Member]], heads: dict[str, ConvHead], recent: int
    ) -> dict[str, list[Message]]:
        """The ``recent`` newest messages of each present entry of a page, read concurrently (in a cluster
        each is a cache round trip)."""
        wanted = []
        for _, m in page:
            _, floor, max_seq = _bounds(m, heads.get(m.conv))
            if recent and not m.left and max_seq > floor:
                wanted.append((m.conv, floor, max_seq))
        pages = await asyncio.gather(
            *(
                self._log.range(conv, after=floor, before=top + 1, limit=recent, newest=True)
                for conv, floor, top in wanted
            )
        )
        return {conv: items for (conv, _, _), items in zip(wanted, pages, strict=True)}

    async def _hide(self, uid: str, conv: str, items: list[Message]) -> list[Message]:
        if not items:
            return items
        return _tombstones(items, set(await self._memberships.hidden_messages(conv, uid)))

    async def mark_read(self, uid: str, device: str, conv: str, seq: int) -> bool:
        """Advance the user's read seq (never back); tell the user's other devices and, in a direct
        conversation, the peer. Returns once durable; False if it was already at or past ``seq``."""
        await self._conversations.member_for_read(uid, conv)
        max_seq = await self._log.max_seq(conv)
        if seq > max_seq:
            raise out_of_range(f"seq {seq} is beyond the conversation's max seq {max_seq}")
        moved = await self._clock.stamped(lambda v: self._memberships.advance_read(conv, uid, seq, v))
        if moved:
            self._notify(uid, device, conv, seq, "read")
        return moved

    async def readers(self, uid: str, conv: str, seq: int) -> ReadState:
        """Which current members have read message ``seq`` (group read receipts, U7). Any member may ask
        about a message it can read. There are no per-message rows: a member has read ``seq`` when its
        read seq is at least ``seq``."""
        member = await self._conversations.member_for_read(uid, conv)
        max_seq = await self._log.max_seq(conv)
        floor = max(member.join_seq, member.cleared_seq)
        if not floor < seq <= max_seq:
            raise out_of_range(f"seq {seq} is not a message this user can read ({floor + 1}..{max_seq})")
        [message] = await self._log.range(conv, after=seq - 1, before=seq + 1, limit=1, newest=False)
        read: list[str] = []
        unread: list[str] = []
        for m in await self._memberships.list_members(conv):
            if m.uid == message.sender or m.join_seq >= seq:  # the sender, or joined after the message
                continue
            (read if m.read_seq >= seq else unread).append(m.uid)
        return ReadState(conv=conv, seq=seq, read=read, unread=unread)

    async def update_settings(self, uid: str, device: str, conv: str, change: SettingsChange) -> ConvSettings:
        """Change the user's settings of ``conv`` (pin, mute, hide, draft, clear history up to a seq). The
        change bumps the conversation-list version and is pushed to the user's other devices."""
        await self._conversations.member_for_read(uid, conv)
        if change.draft is not None and len(change.draft) > MAX_DRAFT:
            raise invalid(f"draft must be at most {MAX_DRAFT} characters")
        if change.cleared_seq is not None:
            max_seq = await self._log.max_seq(conv)
            if change.cleared_seq > max_seq:
                raise out_of_range(f"clear_to={change.cleared_seq} is beyond the conversation's max seq {max_seq}")
        member = await self._clock.stamped(lambda v: self._memberships.update_settings(conv, uid, change, v))
        if member is None:  # a direct conversation nobody has written to yet
            raise out_of_range("there is nothing in this conversation to set yet")
        state = ConvSettings(
            conv=conv,
            version=member.version,
            pinned=member.pinned,
            muted=member.muted,
            hidden=member.hidden,
            draft=member.draft,
            cleared_seq=member.cleared_seq,
        )
        self._fanout.deliver_settings(uid, state, skip=(uid, device) if device else None)
        return state

    async def mark_delivered(self, uid: str, device: str, conv: str, seq: int) -> bool:
        await self._conversations.member_for_read(uid, conv)
        max_seq = await self._log.max_seq(conv)
        if seq > max_seq:
            raise out_of_range(f"seq {seq} is beyond the conversation's max seq {max_seq}")
        moved = await self._memberships.advance_delivered(conv, uid, seq)
        if moved:
            self._notify(uid, device, conv, seq, "delivered")
        return moved

    def _notify(self, uid: str, device: str, conv: str, seq: int, kind: str) -> None:
        receipt = Receipt(conv=conv, user=uid, kind=kind, seq=seq, device=device)
        targets = [uid] if kind == "read" else []
        peer = _peer(conv, uid)
        if peer:
            targets.append(peer)
        if targets:
            self._fanout.deliver_receipt(targets, receipt, skip=(uid, device) if device else None)


def _peer(conv: str, uid: str) -> str:
    if not conv.startswith("d:"):
        return ""
    users = parse_conv(conv).users
    return users[1] if users[0] == uid else users[0]


def _bounds(m: Member, head: ConvHead | None) -> tuple[int, int, int]:
    """(read seq, floor, max seq) of a list entry: the member reads seqs above the floor; without a head (none
    yet, or the member left) the max seq is the read seq."""
    read_seq = max(m.read_seq, m.join_seq)
    return read_seq, max(m.join_seq, m.cleared_seq), head.max_seq if head else read_seq


def _tombstones(items: list[Message], hidden: Collection[int]) -> list[Message]:
    """Messages the user deleted for itself stay in the page (seqs stay gapless) as tombstones that later
    operations on them no longer change."""
    if not hidden:
        return items
    return [
        msgspec.structs.replace(m, body={}, state="hidden", reactions={}, version=1, edited_at=0)
        if m.seq in hidden
        else m
        for m in items
    ]
