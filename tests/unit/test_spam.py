"""The anti-spam guard (services/spam.py) in process: normalisation, links, and escalating mutes on a clock moved by
hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flare_im.backends.ratelimit.memory import MemoryRateLimiter
from flare_im.backends.relational.base import User
from flare_im.backends.safety.base import ALLOW, DENY
from flare_im.backends.safety.sqlite import SqliteSafety
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.safety import SafetyCache, SafetySync
from flare_im.services.spam import SpamGuard, SpamPolicy, domains_in, normalised_hash, rule_for


def test_normalised_hash_ignores_case_spacing_and_punctuation() -> None:
    fullwidth = "\uff22\uff35\uff39 now\uff0ccheap"  # BUY in fullwidth letters, a fullwidth comma
    assert normalised_hash("Buy NOW!!! cheap") == normalised_hash("buy now cheap") == normalised_hash(fullwidth)
    assert normalised_hash("buy now") != normalised_hash("buy later")
    assert normalised_hash("!!!") == normalised_hash(" ! ! ! ") != normalised_hash("???")


def test_domains_and_rules() -> None:
    found = domains_in(["see https://Shop.Example.com/x and spam.biz, mail me at a@b.org, e.g. this"])
    assert found == {"shop.example.com", "spam.biz"}
    rules = {"example.com": ALLOW, "bad.example.com": DENY}
    assert rule_for("shop.example.com", rules) == ALLOW
    assert rule_for("x.bad.example.com", rules) == DENY
    assert rule_for("example.org", rules) is None


class Clock:
    def __init__(self) -> None:
        self.ms = 10_000_000

    def __call__(self) -> int:
        return self.ms


class Users:
    def __init__(self, created_at: int) -> None:
        self.created_at = created_at

    async def get_user(self, uid: str) -> User:
        return User(uid=uid, username=uid, display_name=uid, avatar="", created_at=self.created_at)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteSafety]:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "s.db")))
    s = SqliteSafety(db)
    db.start()
    yield s
    await db.close()


async def guard_of(store: SqliteSafety, clock: Clock, policy: SpamPolicy, created_at: int = 0) -> SpamGuard:
    cache = SafetyCache(store, store, role_of=lambda c, u: None, spam=store, clock=clock)
    await cache.load()
    limiter = MemoryRateLimiter(clock=lambda: clock.ms / 1000)
    users: Any = Users(created_at)
    return SpamGuard(policy, store, cache, SafetySync(cache, None, refresh_s=1), limiter, users, clock=clock)


async def refused(guard: SpamGuard, body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        await guard.check("mallory", "g:g", body)
    except FlareError as exc:
        return {"code": exc.code, **(exc.detail or {})}
    return None


async def test_escalating_automatic_mutes(store: SqliteSafety) -> None:
    clock = Clock()
    policy = SpamPolicy(max_mentions=2, strikes=2, strike_window_s=600, mute_steps_s=(60, 600))
    guard = await guard_of(store, clock, policy)
    spam = {"text": "hi", "mentions": ["a", "b", "c"]}
    assert await refused(guard, {"text": "hi", "mentions": ["a", "b"]}) is None
    assert await refused(guard, spam) == {"code": ErrorCode.INVALID, "reason": "spam", "rule": "mentions"}
    assert await refused(guard, spam) is not None  # the second strike: muted for the first step (60 s)
    muted = await refused(guard, {"text": "innocent"})
    assert muted == {"code": ErrorCode.FORBIDDEN, "reason": "spam_muted", "until": clock.ms + 60_000}
    clock.ms += 59_999
    assert await refused(guard, {"text": "innocent"}) is not None
    clock.ms += 1  # the mute ends at its time
    assert await refused(guard, {"text": "innocent"}) is None
    # Still within the strike window: one more refusal mutes again, for the next step.
    await refused(guard, spam)
    assert (await refused(guard, {"text": "x"})) == {
        "code": ErrorCode.FORBIDDEN,
        "reason": "spam_muted",
        "until": clock.ms + 600_000,
    }
    decisions = await store.decisions(uid="mallory")
    assert [(d.rule, d.action) for d in decisions] == [
        ("mute", "mute"),
        ("mentions", "refused"),
        ("mute", "mute"),
        ("mentions", "refused"),
        ("mentions", "refused"),
    ]
    assert decisions[0].reason.startswith("3 refused sends within 600 s: muted for 600 s (automatic mute 2")
    assert decisions[1].reason == "3 mentions; at most 2 a message"
    assert await guard.lift("mallory", "root")
    assert await refused(guard, {"text": "x"}) is None


async def test_duplicates_links_and_new_accounts(store: SqliteSafety) -> None:
    clock = Clock()
    policy = SpamPolicy(duplicate_max=2, duplicate_window_s=60, link_policy=DENY, new_account_s=3600)
    guard = await guard_of(store, clock, policy, created_at=clock.ms - 10_000)  # an account 10 s old
    assert await refused(guard, {"text": "see example.com"}) == {
        "code": ErrorCode.FORBIDDEN,
        "reason": "spam",
        "rule": "new_account",
    }
    clock.ms += 3_600_000  # an hour later the account is no longer new
    await guard.set_domain("spam.biz", DENY)
    assert await refused(guard, {"text": "see example.com"}) is None
    assert (await refused(guard, {"text": "go to WWW.SPAM.BIZ now"}) or {}).get("rule") == "link"
    assert await refused(guard, {"text": "Hello there"}) is None
    assert await refused(guard, {"text": "hello, there!"}) is None
    assert (await refused(guard, {"text": "HELLO THERE"}) or {}).get("rule") == "duplicate"
    clock.ms += 60_000
    assert await refused(guard, {"text": "hello there"}) is None  # the window moved on
