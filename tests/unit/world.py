"""The send path, sync and message operations in one process, as `flare serve` wires them on one node
(src/flare_im/app.py), over a SQLite file and the in-memory sequencer, with a fan-out that records what it was
asked to push. For unit tests of the services (and for `make mutation`, which needs tests that run in-process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flare_im.backends.idempotency.base import IdempotencyStore
from flare_im.backends.message_log.sqlite import SqliteMessageLog
from flare_im.backends.ratelimit.base import RateLimiter
from flare_im.backends.relational.base import Group, Member, User
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sequencer.memory import DEFAULT_MAX_COUNTERS, MemorySequencer
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.ids import Snowflake, VersionClock
from flare_im.protocol.frames import ConvSettings, Hidden, Message, Receipt, TypingNotice
from flare_im.services.content_filter import ContentFilter
from flare_im.services.conversations import DEFAULT_MAX_DIRECT, DEFAULT_MAX_GROUP_MEMBERS, ConversationService
from flare_im.services.idempotency import IdempotencyCache
from flare_im.services.operations import MessageOperations
from flare_im.services.router import MessageRouter
from flare_im.services.sync import SyncService

Skip = tuple[str, str] | None


@dataclass
class RecordingFanout:
    """Every push the services asked for, in order: ``(kind, uids, frame, skip)``."""

    pushes: list[tuple[str, list[str], Any, Skip]] = field(default_factory=list)

    def deliver_message(self, uids: Iterable[str], message: Message, *, skip: Skip) -> None:
        self.pushes.append(("msg", list(uids), message, skip))

    def deliver_receipt(self, uids: Iterable[str], receipt: Receipt, *, skip: Skip) -> None:
        self.pushes.append(("receipt", list(uids), receipt, skip))

    def deliver_settings(self, uid: str, settings: ConvSettings, *, skip: Skip) -> None:
        self.pushes.append(("settings", [uid], settings, skip))

    def deliver_typing(self, uids: Iterable[str], notice: TypingNotice) -> None:
        self.pushes.append(("typing", list(uids), notice, None))

    def deliver_hidden(self, uid: str, hidden: Hidden, *, skip: Skip) -> None:
        self.pushes.append(("hidden", [uid], hidden, skip))

    def of(self, kind: str) -> list[tuple[list[str], Any, Skip]]:
        return [(uids, frame, skip) for k, uids, frame, skip in self.pushes if k == kind]

    def clear(self) -> None:
        self.pushes.clear()


@dataclass
class World:
    db: SqliteDatabase
    store: SqliteRelational
    log: SqliteMessageLog
    sequencer: MemorySequencer
    clock: VersionClock
    fanout: RecordingFanout
    idempotency: IdempotencyCache
    conversations: ConversationService
    router: MessageRouter
    sync: SyncService
    operations: MessageOperations

    async def users(self, *uids: str) -> None:
        for uid in uids:
            await self.store.create_user(User(uid, uid, uid.title(), f"{uid}.png", 1), None)

    async def group(self, gid: str, owner: str, *others: str, admins: tuple[str, ...] = ()) -> str:
        conv = f"g:{gid}"
        members = [Member(conv=conv, uid=owner, role="owner")]
        members += [Member(conv=conv, uid=u, role="admin" if u in admins else "member") for u in others]
        await self.store.create_group(Group(gid, gid.title(), f"{gid}.png", owner, 1), members)
        return conv

    async def send(self, sender: str, conv: str, text: str, *, cmid: str | None = None, **body: Any) -> Message:
        message, _ = await self.router.send(sender, conv, cmid or f"{sender}-{text}", "text", {"text": text, **body})
        return message


@asynccontextmanager
async def open_world(
    path: Path,
    *,
    recall_window_s: float = 120.0,
    max_body_bytes: int = 4096,
    shared_idempotency: IdempotencyStore | None = None,
    rate_limiter: RateLimiter | None = None,
    user_send_rate_per_s: int = 0,
    content_filter: bool = False,
    caches: dict[str, int] | None = None,
) -> AsyncIterator[World]:
    """``caches``: bounds of the in-memory caches (``max_counters`` of the sequencer, ``max_group_members`` and
    ``max_direct`` of the conversation service); their defaults otherwise."""
    caches = caches or {}
    db = SqliteDatabase(SqliteConfig(path=str(path)))
    store = SqliteRelational(db)
    log = SqliteMessageLog(db)
    db.start()
    try:
        sequencer = MemorySequencer(log.max_seq, max_counters=caches.get("max_counters", DEFAULT_MAX_COUNTERS))
        clock = VersionClock(max(await store.max_version(), await log.max_version()))
        fanout = RecordingFanout()
        idempotency = IdempotencyCache(window_s=300, max_entries=1000)
        idempotency.preload([], complete=True)
        conversations = ConversationService(
            store,
            store,
            max_group_members=caches.get("max_group_members", DEFAULT_MAX_GROUP_MEMBERS),
            max_direct=caches.get("max_direct", DEFAULT_MAX_DIRECT),
        )
        screen = None
        if content_filter:
            screen = ContentFilter(store)
            await screen.reload()
        router = MessageRouter(
            conversations=conversations,
            memberships=store,
            log=log,
            sequencer=sequencer,
            ids=Snowflake(1),
            clock=clock,
            fanout=fanout,
            idempotency=idempotency,
            max_body_bytes=max_body_bytes,
            shared_idempotency=shared_idempotency,
            rate_limiter=rate_limiter,
            user_send_rate_per_s=user_send_rate_per_s,
            content_filter=screen,
        )
        sync = SyncService(
            conversations=conversations,
            memberships=store,
            users=store,
            groups=store,
            log=log,
            clock=clock,
            fanout=fanout,
        )
        operations = MessageOperations(
            conversations=conversations,
            memberships=store,
            log=log,
            router=router,
            clock=clock,
            fanout=fanout,
            recall_window_s=recall_window_s,
            max_body_bytes=max_body_bytes,
            content_filter=screen,
        )
        yield World(db, store, log, sequencer, clock, fanout, idempotency, conversations, router, sync, operations)
    finally:
        await db.close()
