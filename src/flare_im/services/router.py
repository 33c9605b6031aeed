"""The send path (DESIGN.md §3): authorise, deduplicate, sequence, append durably, ack, fan out."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, Protocol

from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.relational.base import MembershipStore
from flare_im.backends.sequencer.base import Sequencer
from flare_im.ids import Snowflake, VersionClock, now_ms
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import ConvSettings, Message, Receipt, TypingNotice
from flare_im.services.conversations import ConversationService
from flare_im.services.idempotency import IdempotencyCache
from flare_im.services.message_kinds import SYSTEM as SYSTEM_KIND
from flare_im.services.message_kinds import validate_body

log = logging.getLogger(__name__)


class Fanout(Protocol):
    """Delivers frames to the online devices of users (the gateway hub, or the node bus in a cluster).

    At-most-once: a device that misses a frame finds the gap by seq and pulls it."""

    def deliver_message(self, uids: Iterable[str], message: Message, *, skip: tuple[str, str] | None) -> None:
        """Push ``message`` to every online device of ``uids`` except ``skip`` = (user, device)."""
        ...

    def deliver_receipt(self, uids: Iterable[str], receipt: Receipt, *, skip: tuple[str, str] | None) -> None: ...

    def deliver_settings(self, uid: str, settings: ConvSettings, *, skip: tuple[str, str] | None) -> None:
        """Push a user's changed conversation settings to that user's devices except ``skip``."""
        ...

    def deliver_typing(self, uids: Iterable[str], notice: TypingNotice) -> None:
        """Push an ephemeral typing notice to every online device of ``uids``."""
        ...


class MessageRouter:
    def __init__(
        self,
        *,
        conversations: ConversationService,
        memberships: MembershipStore,
        log: MessageLog,
        sequencer: Sequencer,
        ids: Snowflake,
        clock: VersionClock,
        fanout: Fanout,
        idempotency: IdempotencyCache,
        max_body_bytes: int,
    ) -> None:
        self._conversations = conversations
        self._memberships = memberships
        self._log = log
        self._sequencer = sequencer
        self._ids = ids
        self._clock = clock
        self._fanout = fanout
        self._idempotency = idempotency
        self._max_body_bytes = max_body_bytes

    async def send(
        self, sender: str, conv: str, cmid: str, kind: str, body: dict[str, Any], *, device: str = ""
    ) -> tuple[Message, bool]:
        """Store and fan out one message; returns it with ``True`` when this was a retry of an already
        stored one (then nothing new is stored or pushed). Returns only once the message is durable."""
        key = (sender, cmid)
        known = self._idempotency.get(key)
        if known is not None:
            if isinstance(known, asyncio.Future):
                return await asyncio.shield(known), True
            return known, True
        validate_body(kind, body, self._max_body_bytes)
        recipients = await self._conversations.recipients_for_send(sender, conv)
        if self._idempotency.claim(key):
            stored = await self._log.find_by_client_id(sender, cmid)
            if stored is not None:
                self._idempotency.put(key, stored)
                return stored, True
            known = self._idempotency.get(key)  # a concurrent retry may have started meanwhile
            if known is not None:
                return (await asyncio.shield(known) if isinstance(known, asyncio.Future) else known), True
        message = await self._append(sender, conv, cmid, kind, body, key)
        self._fanout.deliver_message(recipients, message, skip=(sender, device) if device else None)
        return message, False

    async def send_system(self, actor: str, conv: str, body: dict[str, Any], recipients: Iterable[str]) -> Message:
        """Append a system notice (membership change, rename) to ``conv`` and push it to ``recipients``."""
        cmid = f"sys-{uuid.uuid4().hex}"
        message = await self._append(actor, conv, cmid, SYSTEM_KIND, body, (actor, cmid))
        self._fanout.deliver_message(recipients, message, skip=None)
        return message

    async def _append(
        self, sender: str, conv: str, cmid: str, kind: str, body: dict[str, Any], key: tuple[str, str]
    ) -> Message:
        pending: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        idempotency = self._idempotency
        idempotency.put(key, pending)
        clock = self._clock
        version = clock.begin()
        read_version = 0
        read: Awaitable[None] | None = None
        try:
            seq = await self._sequencer.next_seq(conv)
            message = Message(conv, seq, str(self._ids.next_id()), sender, cmid, kind, body, now_ms())
            appended = self._log.append(message, version)
            # The sender has read its own message: queued right behind the append (the same commit, as a
            # rule) and awaited, so the sender's list is right as soon as it has the ack.
            read_version = clock.begin()
            read = self._memberships.mark_sent(conv, sender, seq, read_version, _mentioned(body, sender))
            await appended
        except BaseException as exc:
            if read is not None:
                clock.end(read_version)
                if isinstance(read, Coroutine):
                    read.close()
            self._sequencer.forget(conv)
            idempotency.discard(key)
            error = exc if isinstance(exc, FlareError) else FlareError(ErrorCode.INTERNAL, "message not stored")
            pending.set_exception(error)
            pending.exception()  # a retry may never await it: mark it retrieved
            if isinstance(exc, FlareError | asyncio.CancelledError):
                raise
            log.exception("append to %s failed", conv)
            raise error from exc
        finally:
            clock.end(version)
        idempotency.put(key, message)
        pending.set_result(message)
        if read is not None:
            try:
                await read
            except Exception:  # the message is stored; a stale read seq only shows as unread
                log.exception("advancing the read seq of %s in %s failed", sender, conv)
            finally:
                clock.end(read_version)
        return message


def _mentioned(body: dict[str, Any], sender: str) -> tuple[str, ...]:
    """Who a message mentions, for unread-mention counts: user ids, "*" for everyone ("all")."""
    mentions = body.get("mentions")
    if not mentions:
        return ()
    return tuple(dict.fromkeys("*" if m == "all" else m for m in mentions if m != sender))
