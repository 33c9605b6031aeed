"""Users' safety on a `flare serve` node: the safety port's adapter, this node's cache of blocks and mutes kept in
step with the other nodes, and the services behind the REST routes (api/safety.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flare_im.api.safety import SafetyApi
from flare_im.backends.bus.base import NodeBus
from flare_im.backends.message_log.base import MessageLog
from flare_im.backends.ratelimit.base import RateLimiter
from flare_im.backends.relational.base import UserStore
from flare_im.backends.safety.sqlite import SqliteSafety
from flare_im.backends.sqlite_db import SqliteDatabase
from flare_im.config import Settings
from flare_im.ids import VersionClock
from flare_im.services.blocks import BlockService, Deliver, MuteService
from flare_im.services.conversations import ConversationService
from flare_im.services.joins import JoinService
from flare_im.services.reports import ReportService
from flare_im.services.router import MessageRouter
from flare_im.services.safety import SafetyCache, SafetySync
from flare_im.services.spam import LINK_POLICIES, SpamGuard, SpamPolicy

if TYPE_CHECKING:
    from flare_im.backends.safety.postgres import PostgresSafety

Closer = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class NodeSafety:
    store: SqliteSafety | PostgresSafety
    cache: SafetyCache
    sync: SafetySync
    joins: JoinService | None = field(default=None)
    spam: SpamGuard | None = field(default=None)

    def join_service(
        self,
        settings: Settings,
        conversations: ConversationService,
        router: MessageRouter,
        log: MessageLog,
        versions: VersionClock,
        deliver: Deliver,
    ) -> JoinService:
        """Invite links, join requests and member limits (before GroupService: it asks for groups' limits)."""
        self.joins = JoinService(
            self.store, conversations, router, log, versions, deliver, max_members=settings.group_max_members
        )
        return self.joins

    def spam_guard(self, settings: Settings, limiter: RateLimiter, users: UserStore) -> SpamGuard | None:
        """The send path's anti-spam guard, None when every rule is off (the router then skips it)."""
        policy = spam_policy(settings)
        self.spam = SpamGuard(policy, self.store, self.cache, self.sync, limiter, users)
        return self.spam if policy.enabled else None

    def services(
        self,
        settings: Settings,
        users: UserStore,
        conversations: ConversationService,
        log: MessageLog,
        router: MessageRouter,
        deliver: Deliver,
    ) -> SafetyApi:
        """What the REST routes call (api/safety.py); ``deliver`` pushes a frame to users' devices on every node."""
        blocks = BlockService(
            self.store, users, self.cache, self.sync, deliver, max_blocks=settings.max_blocks_per_user
        )
        mutes = MuteService(self.store, conversations, router, self.cache, self.sync)
        reports = ReportService(self.store, users, conversations, log, router, mutes)
        assert self.joins is not None, "join_service() first"
        assert self.spam is not None, "spam_guard() first"
        return SafetyApi(blocks=blocks, mutes=mutes, reports=reports, joins=self.joins, spam=self.spam)


async def open_safety_store(
    url: str, sqlite: Callable[[str], SqliteDatabase], closers: list[Closer]
) -> SqliteSafety | PostgresSafety:
    """The safety adapter of the relational database ``url`` (before the SQLite databases start: the embedded one
    migrates itself; PostgreSQL is migrated by ``flare migrate``)."""
    if url.startswith("sqlite://"):
        return SqliteSafety(sqlite(url))
    from flare_im.backends.safety.postgres import PostgresSafety, PostgresSafetyConfig

    store = await PostgresSafety.open(PostgresSafetyConfig(url=url))
    closers.append(store.close)
    return store


async def start_safety(
    settings: Settings,
    store: SqliteSafety | PostgresSafety,
    role_of: Callable[[str, str], str | None],
    stoppers: list[Closer],
) -> NodeSafety:
    """Load the cache; with several nodes, subscribe to the others' change notices and poll the revision."""
    cache = SafetyCache(store, store, role_of=role_of, spam=store)
    await cache.load()
    bus: NodeBus | None = None
    if settings.distributed:
        from flare_im.backends.bus.redis import RedisNodeBus

        bus = RedisNodeBus(settings.cache_url, settings.cache_prefix)  # its own connections, closed with it
    sync = SafetySync(cache, bus, refresh_s=settings.safety_refresh_s)
    await sync.start()
    stoppers.insert(0, sync.close)
    return NodeSafety(store, cache, sync)


def spam_policy(settings: Settings) -> SpamPolicy:
    """The anti-spam rules of the settings; ValueError (the node does not start) for a bad one."""
    if settings.spam_link_policy not in LINK_POLICIES:
        raise ValueError(f"spam_link_policy must be one of {', '.join(LINK_POLICIES)}")
    try:
        steps = tuple(float(s) for s in settings.spam_mute_steps_s.split(",") if s.strip())
    except ValueError:
        steps = ()
    if not steps or min(steps) <= 0:
        raise ValueError("spam_mute_steps_s must be positive seconds separated by commas, e.g. 60,600,3600")
    return SpamPolicy(
        duplicate_max=settings.spam_duplicate_max,
        duplicate_window_s=settings.spam_duplicate_window_s,
        link_policy=settings.spam_link_policy,
        max_mentions=settings.spam_max_mentions,
        new_account_s=settings.spam_new_account_s,
        new_account_per_min=settings.spam_new_account_per_min,
        new_account_links=settings.spam_new_account_links,
        strikes=settings.spam_strikes,
        strike_window_s=settings.spam_strike_window_s,
        mute_steps_s=steps,
    )
