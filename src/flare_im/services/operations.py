"""Operations on messages (Y3, Y7): recall, delete for everyone, edit, reactions, delete for me, forward.

Every operation except "delete for me" is an event with its own seq in the conversation log; the log
applies it to its target in the same transaction (DESIGN.md §2), so history shows current state and a
device replaying events in seq order converges. Each is idempotent by its op id (the event's client id).
Checks and the append run under a per-conversation lock, so two edits of one message are ordered: the
second is based on a stale version and fails with a conflict that carries the current version.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from flare_im.backends.message_log.base import GONE_STATES, Change, MessageLog, Revision
from flare_im.backends.relational.base import MembershipStore
from flare_im.ids import VersionClock, now_ms
from flare_im.protocol.errors import ErrorCode, FlareError, forbidden, invalid
from flare_im.protocol.frames import Hidden, Message
from flare_im.protocol.values import MAX_STORED_DEPTH, check_body
from flare_im.services.content_filter import ContentFilter
from flare_im.services.conversations import DIRECT, GROUP, ConversationService, parse_conv
from flare_im.services.media import MediaService, media_ids_of
from flare_im.services.message_kinds import MERGED, OP_KINDS, SERVER_KEYS, check_size, is_content, validate_body
from flare_im.services.router import Fanout, MessageRouter, edit_conflict
from flare_im.services.safety import SafetyCache

RECALL, DELETE, EDIT, REACT, UNREACT, DELETE_FOR_ME = "recall", "delete", "edit", "react", "unreact", "delete_for_me"
MAX_REACTION_KINDS = 50  # distinct emoji on one message
_QUOTE_KEYS = ("reply_to", "forwarded")  # kept by an edit: they are the server's, not the editor's


@dataclass(frozen=True, slots=True)
class OpResult:
    event: Message  # the operation's event in the log
    target: int
    version: int  # the target's version afterwards
    duplicate: bool  # a retry of an op already applied: nothing changed


def gone(message: Message) -> FlareError:
    return FlareError(
        ErrorCode.GONE, f"the message was {message.state}", detail={"state": message.state, "version": message.version}
    )


class MessageOperations:
    media: MediaService | None = None  # set by the composition root: a recall releases the message's media

    def __init__(
        self,
        *,
        conversations: ConversationService,
        memberships: MembershipStore,
        log: MessageLog,
        router: MessageRouter,
        clock: VersionClock,
        fanout: Fanout,
        recall_window_s: float,
        max_body_bytes: int,
        content_filter: ContentFilter | None = None,
        safety: SafetyCache | None = None,
    ) -> None:
        self._conversations = conversations
        self._memberships = memberships
        self._log = log
        self._router = router
        self._clock = clock
        self._fanout = fanout
        self._recall_window_ms = int(recall_window_s * 1000)
        self._max_body_bytes = max_body_bytes
        self._filter = content_filter
        self._safety = safety  # blocks: a blocked user neither edits nor reacts in the direct conversation
        self._locks: dict[str, asyncio.Lock] = {}

    async def apply(
        self,
        uid: str,
        conv: str,
        op: str,
        target: int,
        opid: str,
        *,
        device: str = "",
        body: dict[str, Any] | None = None,
        base_version: int | None = None,
        emoji: str | None = None,
    ) -> OpResult:
        """Apply ``op`` (recall, delete, edit, react, unreact) by ``uid`` to message ``target``."""
        if op == EDIT and (body is None or base_version is None):
            raise invalid("edit needs body and base_version")
        if op in (REACT, UNREACT) and not emoji:
            raise invalid(f"{op} needs emoji")
        if op not in (RECALL, DELETE, EDIT, REACT, UNREACT):
            raise invalid(f"unknown op {op!r}")
        async with self._conversation_lock(conv):
            prior = await self._router.retry_of(uid, opid)
            if prior is not None:
                return _result(prior, duplicate=True)
            recipients = await self._conversations.recipients_for_send(uid, conv)
            if self._safety is not None and op in (EDIT, REACT):
                self._safety.check_direct(uid, conv, recipients)
            member = await self._conversations.member_for_read(uid, conv)
            message = await self._target(conv, target, floor=max(member.join_seq, member.cleared_seq))
            refs = {"target": target, "target_id": message.msg_id}
            if op in (RECALL, DELETE):
                if message.sender != uid or now_ms() - message.ts > self._recall_window_ms:
                    await self._check_moderator(uid, conv, message, op)
                change = Change(target=target, version=message.version + 1, state=_STATES[op])
                event = {**refs, "version": change.version}
            elif op == EDIT:
                assert body is not None
                change = self._edit(uid, message, body, base_version)
                event = {**refs, "version": change.version, "body": change.body}
            else:
                assert emoji is not None
                change = _reaction(uid, message, emoji, op == REACT)
                event = {**refs, "emoji": emoji}
            stored = await self._router.append_op(uid, conv, opid, op, event, change, recipients, device=device)
            if op in (RECALL, DELETE) and self.media is not None and media_ids_of(message.kind, message.body):
                await self.media.released(conv, target)
        return OpResult(event=stored, target=target, version=change.version, duplicate=False)

    async def recall_for_moderation(self, conv: str, seq: int, reason: str) -> bool:
        """The server recalls a message (a moderation verdict on its media came after it was sent): no window and
        no permission check. The event names its sender as actor and carries ``reason``; False if already gone."""
        async with self._conversation_lock(conv):
            found = await self._log.get(conv, [seq])
            if not found or not is_content(found[0].kind) or found[0].state in GONE_STATES:
                return False
            message = found[0]
            ref = parse_conv(conv)
            recipients = ref.users if ref.kind == DIRECT else [m.uid for m in await self._conversations.members(conv)]
            change = Change(target=seq, version=message.version + 1, state=_STATES[RECALL])
            event = {"target": seq, "target_id": message.msg_id, "version": change.version, "reason": reason}
            opid = f"moderation-{message.msg_id}"
            await self._router.append_op(message.sender, conv, opid, RECALL, event, change, recipients)
        if self.media is not None:
            await self.media.released(conv, seq)
        return True

    async def hide(self, uid: str, device: str, conv: str, seqs: list[int]) -> Hidden:
        """Delete for me: hide messages from this user on all of its devices (no event in the log)."""
        member = await self._conversations.member_for_read(uid, conv)
        floor = max(member.join_seq, member.cleared_seq)
        # Operation events stay visible: a device replaying the log needs them to update their targets.
        found = {m.seq for m in await self._log.get(conv, [s for s in seqs if s > floor]) if m.kind not in OP_KINDS}
        missing = [s for s in seqs if s not in found]
        if missing:
            raise FlareError(ErrorCode.NOT_FOUND, f"no message {missing[0]} this user can read in {conv}")

        async def write(version: int) -> int:
            await self._memberships.hide_messages(conv, uid, seqs, version)
            return version

        version = await self._clock.stamped(write)
        hidden = Hidden(conv=conv, seqs=sorted(set(seqs)), version=version)
        self._fanout.deliver_hidden(uid, hidden, skip=(uid, device) if device else None)
        return hidden

    async def forward(
        self, uid: str, conv: str, seqs: list[int], to: str, cmid: str, *, title: str = "", device: str = ""
    ) -> tuple[Message, bool]:
        """Copy messages of ``conv`` into ``to`` (both must be the user's): one message is copied as it is,
        several become one ``merged`` message."""
        prior = await self._router.retry_of(uid, cmid)
        if prior is not None:
            return prior, True
        member = await self._conversations.member_for_read(uid, conv)
        floor = max(member.join_seq, member.cleared_seq)
        wanted = list(dict.fromkeys(seqs))
        found = {m.seq: m for m in await self._log.get(conv, [s for s in wanted if s > floor])}
        sources: list[Message] = []
        for seq in wanted:
            message = found.get(seq)
            if message is None or not is_content(message.kind):
                raise FlareError(ErrorCode.NOT_FOUND, f"no message {seq} to forward in {conv}")
            if message.state in GONE_STATES:
                raise gone(message)
            sources.append(message)
        if len(sources) == 1:
            source = sources[0]
            body = {k: v for k, v in source.body.items() if k not in ("reply_to", "mentions")}
            body["forwarded"] = {"sender": source.sender, "ts": source.ts, "msg_id": source.msg_id}
            kind = source.kind
        else:
            items = [
                {"sender": m.sender, "kind": m.kind, "body": _without(m.body, "reply_to", "mentions"), "ts": m.ts}
                for m in sources
            ]
            body, kind = {"title": title, "items": items}, MERGED
        # Merging merged messages nests them deeper each time: past what the server stores, 422 (path in the new body).
        check_body(body, "$", MAX_STORED_DEPTH)
        check_size(body, self._max_body_bytes)
        return await self._router.send(uid, to, cmid, kind, body, device=device, trusted=True)

    async def revisions(self, uid: str, conv: str, seq: int) -> tuple[Message, list[Revision]]:
        """A message in its current state and its earlier versions (edit history)."""
        member = await self._conversations.member_for_read(uid, conv)
        message = await self._target(conv, seq, floor=max(member.join_seq, member.cleared_seq))
        return message, await self._log.revisions(conv, seq)

    # ------------------------------------------------------------------ checks

    async def _target(self, conv: str, seq: int, *, floor: int) -> Message:
        found = await self._log.get(conv, [seq]) if seq > floor else []
        if not found or not is_content(found[0].kind):
            raise FlareError(ErrorCode.NOT_FOUND, f"no message {seq} in {conv} that can be changed")
        message = found[0]
        if message.state in GONE_STATES:
            raise gone(message)
        return message

    async def _check_moderator(self, uid: str, conv: str, message: Message, op: str) -> None:
        """Past the window, or someone else's message: only a group's owner or admins may."""
        if parse_conv(conv).kind == GROUP:
            for m in await self._conversations.members(conv):
                if m.uid == uid and m.role in ("owner", "admin"):
                    return
        if message.sender != uid:
            raise forbidden(f"only the sender (or a group owner/admin) may {op} this message")
        raise forbidden(f"the {self._recall_window_ms // 1000} s window to {op} this message has passed")

    def _edit(self, uid: str, message: Message, body: dict[str, Any], base_version: int | None) -> Change:
        if message.sender != uid:
            raise forbidden("only the sender may edit a message")
        if message.kind != "text":
            raise invalid("only text messages can be edited")
        if base_version != message.version:
            raise edit_conflict(message)
        for key in (*_QUOTE_KEYS, *SERVER_KEYS):
            if key in body:
                raise invalid(f"body.{key} cannot be edited")
        validate_body("text", body, self._max_body_bytes)
        if self._filter is not None:
            body = self._filter.screen(body)
        kept = {k: message.body[k] for k in _QUOTE_KEYS if k in message.body}
        return Change(target=message.seq, version=message.version + 1, body={**body, **kept})

    @asynccontextmanager
    async def _conversation_lock(self, conv: str) -> AsyncIterator[None]:
        lock = self._locks.get(conv)
        if lock is None:
            lock = self._locks[conv] = asyncio.Lock()
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(conv) is lock:
                del self._locks[conv]


_STATES = {RECALL: "recalled", DELETE: "deleted"}


def _reaction(uid: str, message: Message, emoji: str, add: bool) -> Change:
    users = message.reactions.get(emoji, [])
    if add and uid in users:
        raise FlareError(ErrorCode.CONFLICT, f"already reacted with {emoji}")
    if not add and uid not in users:
        raise FlareError(ErrorCode.CONFLICT, f"no {emoji} reaction of this user to remove")
    if add and emoji not in message.reactions and len(message.reactions) >= MAX_REACTION_KINDS:
        raise invalid(f"a message takes at most {MAX_REACTION_KINDS} different reactions")
    return Change(target=message.seq, version=message.version, reaction=(emoji, uid, add))


def _result(event: Message, *, duplicate: bool) -> OpResult:
    version = event.body.get("version", 0)
    return OpResult(event=event, target=int(event.body.get("target", 0)), version=int(version), duplicate=duplicate)


def _without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}
