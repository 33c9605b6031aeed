"""The send path (DESIGN.md §3): authorise, deduplicate, sequence, append durably, ack, fan out."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from flare_im.backends.idempotency.base import RECLAIMED, IdempotencyStore
from flare_im.backends.message_log.base import GONE_STATES, Change, MessageLog, VersionConflict
from flare_im.backends.ratelimit.base import RateLimiter
from flare_im.backends.relational.base import MembershipStore
from flare_im.backends.sequencer.base import Sequencer
from flare_im.ids import Snowflake, VersionClock, now_ms
from flare_im.observability import tracing
from flare_im.observability.stats import SendStages
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.protocol.frames import ConvSettings, Hidden, Message, Receipt, TypingNotice
from flare_im.services.content_filter import ContentFilter
from flare_im.services.conversations import ConversationService
from flare_im.services.idempotency import IdempotencyCache
from flare_im.services.media import MediaService, media_ids_of
from flare_im.services.message_kinds import SYSTEM as SYSTEM_KIND
from flare_im.services.message_kinds import check_size, is_content, snippet, validate_body
from flare_im.services.priority import UrgentSends, is_call
from flare_im.services.safety import SafetyCache
from flare_im.services.spam import SpamGuard

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from flare_im.services.webhooks import Webhooks

CLAIM_TTL_S = 8.0  # how long a node's claim on (sender, cmid) lasts while it stores the message
WINDOW_SLACK_MS = 60_000  # the log is asked about a minute further back than the idempotency window


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

    def deliver_hidden(self, uid: str, hidden: Hidden, *, skip: tuple[str, str] | None) -> None:
        """Push messages a user deleted for itself to that user's devices except ``skip``."""
        ...


class FanoutDecorator:
    """A Fanout that hands every frame to ``inner``; a decorator (push, webhooks, the gRPC event feed) overrides
    the deliveries it also acts on."""

    def __init__(self, inner: Fanout) -> None:
        self._inner = inner

    def deliver_message(self, uids: Iterable[str], message: Message, *, skip: tuple[str, str] | None) -> None:
        self._inner.deliver_message(uids, message, skip=skip)

    def deliver_receipt(self, uids: Iterable[str], receipt: Receipt, *, skip: tuple[str, str] | None) -> None:
        self._inner.deliver_receipt(uids, receipt, skip=skip)

    def deliver_settings(self, uid: str, settings: ConvSettings, *, skip: tuple[str, str] | None) -> None:
        self._inner.deliver_settings(uid, settings, skip=skip)

    def deliver_typing(self, uids: Iterable[str], notice: TypingNotice) -> None:
        self._inner.deliver_typing(uids, notice)

    def deliver_hidden(self, uid: str, hidden: Hidden, *, skip: tuple[str, str] | None) -> None:
        self._inner.deliver_hidden(uid, hidden, skip=skip)


class MessageRouter:
    # Uploaded media (services/media.py), set by the composition root: a body naming media_id is resolved.
    media: MediaService | None = None

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
        shared_idempotency: IdempotencyStore | None = None,
        idempotency_window_s: float = 300.0,
        rate_limiter: RateLimiter | None = None,
        user_send_rate_per_s: int = 0,
        content_filter: ContentFilter | None = None,
        webhooks: Webhooks | None = None,
        safety: SafetyCache | None = None,
        spam: SpamGuard | None = None,
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
        # Several nodes: a retry may land on another node than the original send.
        self._shared = shared_idempotency
        self._window_s = idempotency_window_s
        # A user's sends over all devices and nodes (the connection's own limit is per connection).
        self._rate = rate_limiter if user_send_rate_per_s > 0 else None
        self._user_rate = user_send_rate_per_s
        self._filter = content_filter
        self.stages = SendStages()  # read by /metrics
        self._sends = 0  # send() calls: which ones the stage histograms sample
        self._webhooks = webhooks  # before_send endpoints (services/webhooks.py): an empty tuple when none
        self._safety = safety  # blocks and group mutes (services/safety.py): in-memory lookups, no await
        self._spam = spam  # anti-spam (services/spam.py): None unless a rule is configured
        self.urgent = UrgentSends()  # urgent sends under way (the broadcaster waits for none)

    async def send(
        self,
        sender: str,
        conv: str,
        cmid: str,
        kind: str,
        body: dict[str, Any],
        *,
        device: str = "",
        trusted: bool = False,
    ) -> tuple[Message, bool]:
        """Store and fan out one message; returns it with ``True`` when this was a retry of an already
        stored one (then nothing new is stored or pushed). Returns only once the message is durable.
        ``trusted``: the body was built by the server (a forward), only its size is checked."""
        # Call signalling is urgent (services/priority.py): broadcast delivery on this node waits meanwhile.
        urgent = kind == "custom" and is_call(kind, body)
        if urgent:
            self.urgent.begin()
        try:
            self._sends += 1
            timed = self._sends % SendStages.SAMPLE_EVERY == 1
            started = appending = durable = time.perf_counter() if timed else 0.0
            key = (sender, cmid)
            known = self._idempotency.get(key)
            if known is not None:
                if isinstance(known, asyncio.Future):
                    return await asyncio.shield(known), True
                return known, True
            if self._rate is not None and not await self._rate.hit(f"send:{sender}", self._user_rate, 1.0):
                raise FlareError(ErrorCode.RATE_LIMITED, f"more than {self._user_rate} messages/s from this user")
            if trusted:
                check_size(body, self._max_body_bytes)
            else:
                if "media_id" in body and self.media is not None:
                    body = await self.media.resolve(sender, kind, body)
                validate_body(kind, body, self._max_body_bytes)
                if self._filter is not None:
                    body = self._filter.screen(body)
            recipients = await self._conversations.recipients_for_send(sender, conv)
            if self._safety is not None:
                self._safety.check_send(sender, conv, recipients)
            if self._spam is not None:
                await self._spam.check(sender, conv, body)
            if "reply_to" in body:
                body = await self._with_quote(sender, conv, body)
            if self._webhooks is not None and self._webhooks.before_send:
                body = await self._webhooks.screen(sender, conv, cmid, kind, body, device=device, trusted=trusted)
            if self._shared is not None:
                # The shared store answers for every node (and looks in the log itself when it cannot vouch).
                elsewhere = await self._claim_shared(sender, cmid)
                if elsewhere is not None:
                    return elsewhere, True
            elif self._idempotency.claim(key):
                stored = await self._stored(sender, cmid)
                if stored is not None:
                    self._idempotency.put(key, stored)
                    return stored, True
                known = self._idempotency.get(key)  # a concurrent retry may have started meanwhile
                if known is not None:
                    return (await asyncio.shield(known) if isinstance(known, asyncio.Future) else known), True
            if timed:
                appending = time.perf_counter()
                self.stages.route.observe(appending - started)
            span = tracing.child("flare.send.append") if tracing.ENABLED else None  # current: Kafka headers name it
            message = await self._append(sender, conv, cmid, kind, body, key)
            if ("media_id" in body or kind == "merged") and self.media is not None:  # two dict/str checks otherwise
                await self.media.sent(conv, message.seq, sender, media_ids_of(kind, body))  # before readers hear of it
            if timed:
                durable = time.perf_counter()
                self.stages.durable.observe(durable - appending)
            if span is not None:
                span.end(**{"flare.seq": message.seq, "flare.msg_id": message.msg_id})
                span = tracing.child("flare.send.fanout")
            self._fanout.deliver_message(recipients, message, skip=(sender, device) if device else None)
            if timed:
                self.stages.fanout.observe(time.perf_counter() - durable)
            if span is not None:
                span.end(**{"flare.recipients": len(recipients)})
            return message, False
        finally:
            if urgent:
                self.urgent.end()

    async def _stored(self, sender: str, cmid: str) -> Message | None:
        """What the log holds under the key from within the idempotency window (and a minute more, for ids made
        on a node whose clock is ahead): a retry after the window may be stored anew (protocol §7)."""
        since_ms = now_ms() - int(self._window_s * 1000) - WINDOW_SLACK_MS
        return await self._log.find_by_client_id(sender, cmid, since_ms=since_ms)

    async def _claim_shared(self, sender: str, cmid: str) -> Message | None:
        """Claim ``(sender, cmid)`` for this node, or return what another node stored under it."""
        shared = self._shared
        assert shared is not None
        for _ in range(100):  # another node is storing it: its result arrives within an append's time
            # A short claim: if the node holding it dies, a retry elsewhere may claim it soon after.
            claimed = await shared.reserve(sender, cmid, CLAIM_TTL_S)
            if claimed == RECLAIMED:
                # An earlier claim ran out without a result: its node may have stored the message before
                # it died (acknowledged by the queue, never by us). The log has the last word.
                stored = await self._stored(sender, cmid)
                if stored is not None:
                    await shared.complete(sender, cmid, _encode_message(stored), self._window_s)
                    return stored
            if claimed:
                return None
            raw = await shared.get(sender, cmid)
            if raw is not None:
                return _decode_message(raw)
            await asyncio.sleep(0.05)
        raise FlareError(ErrorCode.UNAVAILABLE, "the same message is still being stored; retry")

    def _release_shared(self, sender: str, cmid: str) -> None:
        shared = self._shared
        assert shared is not None
        task = asyncio.ensure_future(shared.release(sender, cmid))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # best effort: the claim expires anyway

    async def retry_of(self, sender: str, cmid: str) -> Message | None:
        """The event ``sender`` already stored (or is storing) under ``cmid``, if any: an op retried."""
        key = (sender, cmid)
        known = self._idempotency.get(key)
        if known is None and self._shared is not None:
            # Several nodes: the shared store has the result of every op stored within the window. When it
            # cannot vouch (Redis lost its data), the log has the last word.
            raw = await self._shared.get(sender, cmid)
            if raw is not None:
                return _decode_message(raw)
            if await self._shared.vouched():
                return None
            return await self._stored(sender, cmid)
        if known is None and self._idempotency.claim(key):
            stored = await self._stored(sender, cmid)
            if stored is not None:
                self._idempotency.put(key, stored)
                return stored
            known = self._idempotency.get(key)
        if known is None:
            return None
        return await asyncio.shield(known) if isinstance(known, asyncio.Future) else known

    async def append_op(
        self,
        actor: str,
        conv: str,
        opid: str,
        kind: str,
        body: dict[str, Any],
        change: Change,
        recipients: Iterable[str],
        *,
        device: str = "",
    ) -> Message:
        """Append an operation event (its own seq) that ``change``s its target, then push it to
        ``recipients``. The caller has checked permissions and that ``opid`` is new."""
        message = await self._append(actor, conv, opid, kind, body, (actor, opid), change)
        self._fanout.deliver_message(recipients, message, skip=(actor, device) if device else None)
        return message

    async def _with_quote(self, sender: str, conv: str, body: dict[str, Any]) -> dict[str, Any]:
        """Replace ``reply_to: {seq}`` with a snapshot of the quoted message, so a client can render the
        quote without having it; a recalled message is quoted as recalled, without its text."""
        ref = body["reply_to"]
        seq = ref.get("seq") if isinstance(ref, dict) else None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise FlareError(ErrorCode.INVALID, "reply_to needs seq, the quoted message's seq")
        member = await self._conversations.member_for_read(sender, conv)
        found = await self._log.get(conv, [seq]) if seq > max(member.join_seq, member.cleared_seq) else []
        if not found or not is_content(found[0].kind):
            raise FlareError(ErrorCode.NOT_FOUND, f"no message {seq} to reply to in this conversation")
        quoted = found[0]
        snapshot: dict[str, Any] = {"seq": seq, "msg_id": quoted.msg_id, "sender": quoted.sender, "kind": quoted.kind}
        if quoted.state in GONE_STATES:
            snapshot["state"] = quoted.state
        else:
            snapshot["snippet"] = snippet(quoted.kind, quoted.body)
        return {**body, "reply_to": snapshot}

    async def send_system(
        self, actor: str, conv: str, body: dict[str, Any], recipients: Iterable[str], *, cmid: str = ""
    ) -> Message:
        """Append a system notice (membership change, rename) to ``conv`` and push it to ``recipients``.
        ``cmid``: the caller's idempotency key (``retry_of(actor, cmid)`` finds the notice); empty: a new one."""
        cmid = cmid or f"sys-{uuid.uuid4().hex}"
        message = await self._append(actor, conv, cmid, SYSTEM_KIND, body, (actor, cmid))
        self._fanout.deliver_message(recipients, message, skip=None)
        return message

    async def _append(
        self,
        sender: str,
        conv: str,
        cmid: str,
        kind: str,
        body: dict[str, Any],
        key: tuple[str, str],
        change: Change | None = None,
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
            if change is None:
                appended = self._log.append(message, version)
            else:
                if change.body is not None:  # an edit is dated by its event, so clients can replay it
                    change = dataclasses.replace(change, edited_at=message.ts)
                appended = self._log.apply(message, change, version)
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
            if self._shared is not None:
                self._release_shared(sender, cmid)
            error = _client_error(exc)
            pending.set_exception(error)
            pending.exception()  # a retry may never await it: mark it retrieved
            if isinstance(exc, FlareError | asyncio.CancelledError):
                raise
            if error.code != ErrorCode.INTERNAL:
                raise error from exc
            log.exception("append to %s failed", conv)
            raise error from exc
        finally:
            clock.end(version)
        if self._shared is not None:
            await self._shared.complete(sender, cmid, _encode_message(message), self._window_s)
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


_encode_message = msgspec.msgpack.Encoder().encode
_decode_message = msgspec.msgpack.Decoder(Message).decode


def _client_error(exc: BaseException) -> FlareError:
    if isinstance(exc, FlareError):
        return exc
    if isinstance(exc, VersionConflict):
        return edit_conflict(exc.current)
    if isinstance(exc, LookupError):
        return FlareError(ErrorCode.NOT_FOUND, "no such message")
    return FlareError(ErrorCode.INTERNAL, "message not stored")


def edit_conflict(current: Message) -> FlareError:
    """An edit based on an old version: the reply carries the current one so the client can resolve."""
    return FlareError(
        ErrorCode.CONFLICT,
        f"the message is at version {current.version}; edit that version",
        detail={"version": current.version, "body": current.body, "edited_at": current.edited_at},
    )


def _mentioned(body: dict[str, Any], sender: str) -> tuple[str, ...]:
    """Who a message mentions, for unread-mention counts: user ids, "*" for everyone ("all")."""
    mentions = body.get("mentions")
    if not mentions:
        return ()
    return tuple(dict.fromkeys("*" if m == "all" else m for m in mentions if m != sender))
