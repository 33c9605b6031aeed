"""The send path's side of notifications (DESIGN.md §3 step 7): once an event is durable, put it on the push queue.

The router, the operations and read receipts call ``Notifier``: it only encodes one record per event and hands it
to the queue port's producer (in-process in ``flare serve``, Kafka in a cluster), keyed by conversation so one
worker sees a conversation's events in order. Everything else — which devices are offline, settings, templates,
badges, collapse, sending — happens in the push worker (services/notify_worker.py), off the ack's path.

Not guaranteed: an event whose publish fails (Kafka unreachable past its timeout) is logged and not notified; the
message itself is stored and syncs as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec

from flare_im.backends.queue.base import Position
from flare_im.backends.relational.base import DeviceStore, PushTarget
from flare_im.protocol.frames import Message, Receipt
from flare_im.services.message_kinds import SYSTEM, is_content
from flare_im.services.router import Fanout, FanoutDecorator

log = logging.getLogger(__name__)

OP_NOTIFYING = frozenset({"recall", "delete"})  # operations that replace a notification already shown


class MessageEvent(msgspec.Struct, tag="m", array_like=True):
    """A stored message (or a recall/delete of one) for its recipients' offline devices."""

    conv: str
    seq: int
    msg_id: str
    sender: str
    kind: str
    body: dict[str, Any]
    ts: int  # epoch ms
    recipients: list[str]  # the conversation's members at send time, the sender excluded


class ReadEvent(msgspec.Struct, tag="r", array_like=True):
    """``uid`` read ``conv`` up to ``seq`` on ``device``: the badge changes on its other devices."""

    uid: str
    device: str
    conv: str
    seq: int
    ts: int


PushEvent = MessageEvent | ReadEvent
encode_event = msgspec.msgpack.Encoder().encode
decode_event = msgspec.msgpack.Decoder(PushEvent).decode

Publish = Callable[[str, str, bytes], Awaitable[Position]]


class Notifier:
    """Enqueues push events; never blocks and never raises into the send path."""

    def __init__(self, publish: Publish, topic: str, *, wanted: Callable[[str], bool] | None = None) -> None:
        """``publish``: the queue producer's; ``wanted(uid)`` False skips a user known to have no push target
        (one node: the target cache is exact; a cluster passes None and the worker decides)."""
        self._publish = publish
        self._topic = topic
        self._wanted = wanted
        self.published = 0
        self.failed = 0
        self._watching: set[asyncio.Future[None]] = set()

    def message(self, message: Message, recipients: Iterable[str]) -> None:
        kind = message.kind
        if not (is_content(kind) or kind == SYSTEM or kind in OP_NOTIFYING):
            return  # edits and reactions notify nobody
        sender = message.sender
        wanted = self._wanted
        others = [u for u in recipients if u != sender and (wanted is None or wanted(u))]
        if others:
            event = MessageEvent(
                message.conv, message.seq, message.msg_id, sender, kind, message.body, message.ts, others
            )
            self._send(message.conv, event)

    def read(self, uid: str, device: str, conv: str, seq: int) -> None:
        if self._wanted is None or self._wanted(uid):
            self._send(conv, ReadEvent(uid, device, conv, seq, time.time_ns() // 1_000_000))

    def _send(self, key: str, event: PushEvent) -> None:
        try:
            stored = self._publish(self._topic, key, encode_event(event))
        except Exception:
            self._failed(None)
            return
        self.published += 1
        if isinstance(stored, asyncio.Future):
            if stored.done():  # in-process: stored already
                self._check(stored)
            else:
                stored.add_done_callback(self._check)
        else:
            task = asyncio.ensure_future(self._watch(stored))
            self._watching.add(task)
            task.add_done_callback(self._watching.discard)

    def _check(self, stored: asyncio.Future[Position]) -> None:
        if not stored.cancelled() and stored.exception() is not None:
            self._failed(stored.exception())

    async def _watch(self, stored: Awaitable[Position]) -> None:
        try:
            await stored
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException | None) -> None:
        self.failed += 1
        log.warning("a push event was not queued (%r); its notifications are lost", exc)


class TargetCache:
    """Users' push targets, cached: the worker reads them for every event, and the notifier asks whether a
    user has any at all. ``ttl_s`` 0: entries live until ``invalidate`` (one node, where every registration
    goes through this process); otherwise a registration made on another node is seen within ``ttl_s``."""

    def __init__(
        self,
        devices: DeviceStore,
        *,
        ttl_s: float = 0.0,
        max_users: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._devices = devices
        self._ttl_s = ttl_s
        self._max_users = max_users
        self._clock = clock
        self._entries: dict[str, tuple[float, list[PushTarget]]] = {}

    def known_empty(self, uid: str) -> bool:
        """True only when ``uid`` is known (and fresh) to have no push target."""
        entry = self._entries.get(uid)
        return entry is not None and not entry[1] and self._fresh(entry[0])

    def wanted(self, uid: str) -> bool:
        return not self.known_empty(uid)

    def _fresh(self, loaded_at: float) -> bool:
        return not self._ttl_s or self._clock() - loaded_at < self._ttl_s

    async def get(self, uids: Sequence[str]) -> dict[str, list[PushTarget]]:
        """The targets of each of ``uids`` (users without any map to [])."""
        out: dict[str, list[PushTarget]] = {}
        missing: list[str] = []
        for uid in dict.fromkeys(uids):
            entry = self._entries.get(uid)
            if entry is not None and self._fresh(entry[0]):
                out[uid] = entry[1]
            else:
                missing.append(uid)
        if missing:
            found: dict[str, list[PushTarget]] = {uid: [] for uid in missing}
            for target in await self._devices.push_targets(missing):
                found[target.uid].append(target)
            if len(self._entries) + len(found) > self._max_users:
                self._entries.clear()
            now = self._clock()
            for uid, targets in found.items():
                self._entries[uid] = (now, targets)
            out.update(found)
        return out

    def invalidate(self, uid: str) -> None:
        self._entries.pop(uid, None)

    def clear(self) -> None:
        """Forget every entry (a registration moved a token from one user to another)."""
        self._entries.clear()


class NotifyingFanout(FanoutDecorator):
    """The router's Fanout, decorated: every message it delivers to the online devices is also queued for the
    offline ones, and every read receipt for the reader's other devices' badges (DESIGN.md §3 steps 6-7). The
    services call the Fanout only once an event is durable, which is the moment a push event may be queued."""

    def __init__(self, inner: Fanout, notifier: Notifier) -> None:
        super().__init__(inner)
        self._notifier = notifier

    def deliver_message(self, uids: Iterable[str], message: Message, *, skip: tuple[str, str] | None) -> None:
        users = uids if isinstance(uids, list) else list(uids)
        self._inner.deliver_message(users, message, skip=skip)
        self._notifier.message(message, users)

    def deliver_receipt(self, uids: Iterable[str], receipt: Receipt, *, skip: tuple[str, str] | None) -> None:
        self._inner.deliver_receipt(uids, receipt, skip=skip)
        if receipt.kind == "read":
            self._notifier.read(receipt.user, receipt.device, receipt.conv, receipt.seq)
