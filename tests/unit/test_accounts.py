"""Accounts under hostile input (services/users.py, services/auth.py, services/abuse.py, flare_im/identity.py):
login and registration limits, the hashing pool, registration modes and invites, refresh-token families,
logout and revocation, tokens of users that do not exist, id normalisation and control characters.

The store is a real SQLite relational adapter; the clock is injected; the password hasher is argon2 with a tiny
memory cost so the tests are quick."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher

from flare_im.backends.ratelimit.memory import MemoryRateLimiter
from flare_im.backends.relational.base import TokenState
from flare_im.backends.relational.sqlite import SqliteRelational
from flare_im.backends.sqlite_db import SqliteConfig, SqliteDatabase
from flare_im.identity import CONTROL_RANGES, check_text, control_char
from flare_im.netlimits import networks_of
from flare_im.protocol.errors import ErrorCode, FlareError
from flare_im.services.abuse import (
    AbuseGuard,
    AuthLimits,
    HashPool,
    RetryLater,
    client_ip,
    default_hash_concurrency,
    ip_key,
)
from flare_im.services.auth import AuthService
from flare_im.services.users import UserService

SECRET = "a-test-secret-of-at-least-32-bytes!!"
PASSWORD = "correct horse"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """The relational store, counting ``token_state`` reads (what the token cache saves)."""

    def __init__(self, store: SqliteRelational) -> None:
        self._store = store
        self.state_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def token_state(self, uid: str, sid: str) -> TokenState | None:
        self.state_reads += 1
        return await self._store.token_state(uid, sid)


@dataclass
class World:
    store: CountingStore
    auth: AuthService
    users: UserService
    clock: Clock
    limiter: MemoryRateLimiter

    def service(self, **kw: Any) -> UserService:
        return UserService(self.store, self.auth, clock=self.clock, **kw)  # type: ignore[arg-type]

    def other_node(self) -> AuthService:
        return make_auth(self.store, self.clock)


def make_auth(store: Any, clock: Clock, **kw: Any) -> AuthService:
    hasher = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    return AuthService(
        store,
        jwt_secret=SECRET,
        admin_key="admin",
        access_ttl_s=3600,
        refresh_ttl_s=30 * 24 * 3600,
        hasher=hasher,
        hash_pool=HashPool(2, wait_s=5),
        clock=clock,
        **kw,
    )


LIMITS = AuthLimits(
    login_ip_limit=5,
    login_ip_window_s=60,
    login_failure_limit=3,
    login_failure_window_s=900,
    register_ip_limit=2,
    register_ip_window_s=3600,
)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = SqliteDatabase(SqliteConfig(path=str(tmp_path / "flare.db")))
    store = CountingStore(SqliteRelational(db))
    db.start()
    clock = Clock()
    auth = make_auth(store, clock)
    limiter = MemoryRateLimiter()
    users = UserService(store, auth, guard=AbuseGuard(limiter, LIMITS), clock=clock)  # type: ignore[arg-type]
    try:
        yield World(store, auth, users, clock, limiter)
    finally:
        auth.hash_pool.close()
        await db.close()


async def refused(code: ErrorCode, aw: Any) -> FlareError:
    with pytest.raises(FlareError) as info:
        await aw
    assert info.value.code is code, info.value
    return info.value


# ---------------------------------------------------------------------------- 7. limits


async def test_login_attempts_per_ip_are_limited_before_any_hash(world: World) -> None:
    await world.users.register("alice", PASSWORD, ip="10.0.0.9")
    for _ in range(LIMITS.login_ip_limit):
        await world.users.login("alice", PASSWORD, ip="10.0.0.1")
    hashes_before = world.auth.hash_pool.completed
    error = await refused(ErrorCode.RATE_LIMITED, world.users.login("alice", PASSWORD, ip="10.0.0.1"))
    assert isinstance(error, RetryLater)
    assert error.retryable
    assert error.detail == {"retry_after_s": 12}  # one attempt comes back every 12 s
    assert world.auth.hash_pool.completed == hashes_before  # refused before the password was looked at
    await world.users.login("alice", PASSWORD, ip="10.0.0.2")  # another address is not affected


async def test_failed_logins_per_account_are_limited_whatever_the_address(world: World) -> None:
    await world.users.register("alice", PASSWORD, ip="10.0.0.9")
    await world.users.register("bob", PASSWORD, ip="10.0.0.8")
    for i in range(LIMITS.login_failure_limit):
        await refused(ErrorCode.UNAUTHORIZED, world.users.login("alice", "wrong password", ip=f"10.1.0.{i}"))
    # even the right password waits now: the account is over its failures
    await refused(ErrorCode.RATE_LIMITED, world.users.login("Alice", PASSWORD, ip="10.2.0.1"))
    await world.users.login("bob", PASSWORD, ip="10.2.0.1")
    # successes do not count as failures
    for _ in range(LIMITS.login_failure_limit + 1):
        await world.users.login("bob", PASSWORD, ip=f"10.3.0.{_}")


async def test_unknown_accounts_are_limited_the_same_way(world: World) -> None:
    for i in range(LIMITS.login_failure_limit):
        await refused(ErrorCode.UNAUTHORIZED, world.users.login("ghost", PASSWORD, ip=f"10.1.0.{i}"))
    await refused(ErrorCode.RATE_LIMITED, world.users.login("ghost", PASSWORD, ip="10.2.0.1"))


async def test_registrations_per_ip_are_limited_and_a_refused_one_creates_nothing(world: World) -> None:
    await world.users.register("u1", PASSWORD, ip="2001:db8::1")
    await world.users.register("u2", PASSWORD, ip="2001:db8::2")  # the same /64
    await refused(ErrorCode.RATE_LIMITED, world.users.register("u3", PASSWORD, ip="2001:db8::3"))
    assert await world.store.get_user("u3") is None
    await world.users.register("u3", PASSWORD, ip="2001:db8:1::1")  # another /64


async def test_the_hash_pool_runs_at_most_its_size_and_refuses_past_its_bounds() -> None:
    pool = HashPool(2, wait_s=30)
    gate = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()
    loop = asyncio.get_running_loop()
    two_running = asyncio.Event()

    def job() -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running == 2:
                loop.call_soon_threadsafe(two_running.set)
        gate.wait(10)
        with lock:
            running -= 1
        return 1

    try:
        jobs = [asyncio.ensure_future(pool.run(job)) for _ in range(2 + 8 * 2)]  # 2 running, 16 waiting
        await asyncio.wait_for(two_running.wait(), 10)
        extra = await refused(ErrorCode.UNAVAILABLE, pool.run(job))  # the 17th waiter is refused at once
        assert extra.retryable
        assert extra.detail == {"retry_after_s": 1}
        gate.set()
        assert sum(await asyncio.gather(*jobs)) == 18
        assert peak == 2
    finally:
        gate.set()
        pool.close()


async def test_a_waiter_gives_up_after_wait_s_and_a_cancelled_caller_keeps_its_slot_until_done() -> None:
    pool = HashPool(1, wait_s=0.05)
    gate = threading.Event()
    loop = asyncio.get_running_loop()
    started, finished = asyncio.Event(), asyncio.Event()

    def hold() -> None:
        loop.call_soon_threadsafe(started.set)
        gate.wait(10)
        loop.call_soon_threadsafe(finished.set)

    try:
        holder = asyncio.ensure_future(pool.run(hold))
        await asyncio.wait_for(started.wait(), 10)
        await refused(ErrorCode.UNAVAILABLE, pool.run(lambda: 1))  # no slot within wait_s
        holder.cancel()  # the caller leaves; the thread still holds its memory
        await asyncio.sleep(0.01)
        assert pool.running == 1
        await refused(ErrorCode.UNAVAILABLE, pool.run(lambda: 1))
        gate.set()
        await asyncio.wait_for(finished.wait(), 10)
        pool._wait_s = 30  # the slot comes back just after the thread ends: wait for it however slow the machine
        assert await pool.run(lambda: 7) == 7
    finally:
        gate.set()
        pool.close()


def test_default_hash_concurrency_follows_memory_and_cores() -> None:
    mib = 1024 * 1024
    assert default_hash_concurrency(64 * mib, 24 * 1024 * mib, 2) == 2  # plenty of memory: one per core
    assert default_hash_concurrency(64 * mib, 512 * mib, 8) == 2  # a quarter of 512 MiB holds two hashes
    assert default_hash_concurrency(64 * mib, 100 * mib, 8) == 1  # never less than one
    assert default_hash_concurrency(64 * mib, None, 3) == 3


def test_client_ip_trusts_forwarded_for_only_from_a_trusted_proxy() -> None:
    trusted = networks_of("10.0.0.0/8, 192.168.1.5")
    assert client_ip("203.0.113.7", "1.2.3.4", trusted) == "203.0.113.7"  # not a proxy: its header is ignored
    assert client_ip("10.0.0.2", "1.2.3.4", trusted) == "1.2.3.4"
    assert client_ip("10.0.0.2", "6.6.6.6, 1.2.3.4, 192.168.1.5", trusted) == "1.2.3.4"  # forged left part
    assert client_ip("10.0.0.2", None, trusted) == "10.0.0.2"
    assert client_ip("10.0.0.2", "1.2.3.4", ()) == "10.0.0.2"  # no trusted proxies configured
    assert ip_key("2001:db8::1") == ip_key("2001:db8::ffff") == "2001:db8::/64"
    assert ip_key("1.2.3.4") == "1.2.3.4"


# ---------------------------------------------------------------------------- 7. registration modes, invites


async def test_closed_registration_creates_nothing(world: World) -> None:
    users = world.service(registration="closed")
    await refused(ErrorCode.FORBIDDEN, users.register("alice", PASSWORD))
    assert await world.store.get_user("alice") is None


async def test_invite_registration(world: World) -> None:
    users = world.service(registration="invite")
    invite, token = await users.create_invite(max_uses=2, ttl_s=3600, note="team")
    await refused(ErrorCode.FORBIDDEN, users.register("eve", PASSWORD))  # no invite
    await refused(ErrorCode.FORBIDDEN, users.register("eve", PASSWORD, invite="not-a-token"))
    assert await world.store.get_user("eve") is None

    await users.register("ann", PASSWORD, invite=token)
    await refused(ErrorCode.CONFLICT, users.register("ANN", PASSWORD, invite=token))  # taken: no use spent
    assert (await world.store.get_invite(invite.token_hash)).uses == 1  # type: ignore[union-attr]
    await users.register("ben", PASSWORD, invite=token)
    await refused(ErrorCode.FORBIDDEN, users.register("cat", PASSWORD, invite=token))  # used up
    assert await world.store.get_user("cat") is None

    _, late = await users.create_invite(ttl_s=60)
    world.clock.now += 61
    await refused(ErrorCode.FORBIDDEN, users.register("dan", PASSWORD, invite=late))  # expired
    assert await world.store.get_user("dan") is None

    assert [i.uses for i in await users.invites()] == [0, 2]
    await users.delete_invite(invite.invite_id)
    await refused(ErrorCode.NOT_FOUND, users.delete_invite(invite.invite_id))


# ---------------------------------------------------------------------------- 9. tokens


async def test_reusing_a_refresh_token_revokes_its_whole_session(world: World) -> None:
    first = await world.users.register("alice", PASSWORD)
    other = await world.users.login("alice", PASSWORD)  # another device
    second = await world.auth.refresh(first.refresh_token)
    assert await world.auth.authenticate(second.access_token) == "alice"

    await refused(ErrorCode.UNAUTHORIZED, world.auth.refresh(first.refresh_token))  # the reuse
    await refused(ErrorCode.UNAUTHORIZED, world.auth.refresh(second.refresh_token))  # its descendant too
    for token in (first.access_token, second.access_token):
        await refused(ErrorCode.UNAUTHORIZED, world.auth.authenticate(token))
    # the other session is not affected
    assert await world.auth.authenticate(other.access_token) == "alice"
    assert (await world.auth.refresh(other.refresh_token)).user_id == "alice"


async def test_logout_revokes_the_session_and_its_access_token(world: World) -> None:
    mine = await world.users.register("alice", PASSWORD)
    other = await world.users.login("alice", PASSWORD)
    assert await world.auth.authenticate(mine.access_token) == "alice"  # now cached

    await world.auth.logout(mine.access_token)
    await refused(ErrorCode.UNAUTHORIZED, world.auth.authenticate(mine.access_token))
    await refused(ErrorCode.UNAUTHORIZED, world.auth.refresh(mine.refresh_token))
    # every node refuses it once its cache entry is older than cache_ttl_s (5 s)
    assert await world.auth.authenticate(other.access_token) == "alice"
    node2 = world.other_node()
    await refused(ErrorCode.UNAUTHORIZED, node2.authenticate(mine.access_token))
    node2.hash_pool.close()


async def test_revoke_all_refuses_every_earlier_token_and_not_later_ones(world: World) -> None:
    a = await world.users.register("alice", PASSWORD)
    b = await world.users.login("alice", PASSWORD)
    admin_token = world.auth.issue_access_token("alice", ttl_s=7200)
    world.clock.now += 1
    await world.auth.revoke_all("alice")
    for token in (a.access_token, b.access_token, admin_token):
        await refused(ErrorCode.UNAUTHORIZED, world.auth.authenticate(token))
    for refresh in (a.refresh_token, b.refresh_token):
        await refused(ErrorCode.UNAUTHORIZED, world.auth.refresh(refresh))
    world.clock.now += 1
    fresh = await world.users.login("alice", PASSWORD)
    assert await world.auth.authenticate(fresh.access_token) == "alice"


async def test_a_signed_token_of_a_user_that_does_not_exist_is_refused(world: World) -> None:
    token = world.auth.issue_access_token("ghost")
    error = await refused(ErrorCode.UNAUTHORIZED, world.auth.authenticate(token))
    assert "no such user" in error.message
    legacy = jwt.encode(
        {"sub": "ghost", "iat": 1, "exp": 2_000_000_000, "iss": "flare", "typ": "access"}, SECRET, "HS256"
    )
    await refused(ErrorCode.UNAUTHORIZED, world.auth.authenticate(legacy))


async def test_token_state_is_cached_for_cache_ttl_s(world: World) -> None:
    pair = await world.users.register("alice", PASSWORD)
    reads = world.store.state_reads
    for _ in range(10):
        await world.auth.authenticate(pair.access_token)
    assert world.store.state_reads == reads + 1
    # a revocation on another node applies here once the cached state is older than cache_ttl_s
    node2 = world.other_node()
    await node2.revoke_all("alice")
    node2.hash_pool.close()
    assert await world.auth.authenticate(pair.access_token) == "alice"
    world.clock.now += 5.1
    await refused(ErrorCode.UNAUTHORIZED, world.auth.authenticate(pair.access_token))


async def test_an_expired_token_is_refused(world: World) -> None:
    pair = await world.users.register("alice", PASSWORD)
    world.clock.now += 3600
    error = await refused(ErrorCode.UNAUTHORIZED, world.auth.authenticate(pair.access_token))
    assert error.message == "token expired"


# ---------------------------------------------------------------------------- 10. identities


async def test_ids_are_normalised_at_registration_login_and_admin_calls(world: World) -> None:
    pair = await world.users.register("Alice", PASSWORD, display_name="Alice")
    assert pair.user_id == "alice"
    assert (await world.users.login("ALICE", PASSWORD)).user_id == "alice"
    assert (await world.users.login("\uff41lice", PASSWORD)).user_id == "alice"  # full-width a
    await refused(ErrorCode.CONFLICT, world.users.register("alice", PASSWORD))

    bob = await world.users.create_by_admin("Bob")
    assert bob.uid == "bob"
    await refused(ErrorCode.CONFLICT, world.users.create_by_admin("BOB"))
    created, existing = await world.users.import_by_admin([("Carol", "", ""), ("carol", "", ""), ("BOB", "", "")])
    assert (created, existing) == (["carol"], ["bob"])
    assert set(await world.users.issue_tokens_by_admin(["Carol", "bob"])) == {"carol", "bob"}
    uid, token = await world.users.issue_token_by_admin("CAROL")
    assert uid == "carol"
    assert await world.auth.authenticate(token) == "carol"
    assert [u.uid for u in await world.users.profiles(["ALICE"])] == ["alice"]


@pytest.mark.parametrize("name", ["\u202eevil", "a\x00b", "two\nlines", "tab\there", "\u2066x\u2069", "zw\u200bsp"])
async def test_control_characters_in_names_are_refused_and_change_nothing(world: World, name: str) -> None:
    await refused(ErrorCode.INVALID, world.users.register("mallory", PASSWORD, display_name=name))
    await refused(ErrorCode.INVALID, world.users.create_by_admin("mallory", display_name=name))
    assert await world.store.get_user("mallory") is None
    await world.users.create_by_admin("alice", display_name="Alice")
    await refused(ErrorCode.INVALID, world.users.update_profile("alice", display_name=name, avatar=None))
    assert (await world.store.get_user("alice")).display_name == "Alice"  # type: ignore[union-attr]


def test_names_may_hold_joiners_and_non_latin_text() -> None:
    for name in (
        "Zoë",
        "李小龙",
        "\U0001f469\u200d\U0001f4bb dev",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        "O'Brien-Smith",
    ):
        assert check_text(name, "display name") == name


def test_control_ranges_are_the_cc_cf_co_code_points_but_the_joiners() -> None:
    import unicodedata

    listed = {cp for lo, hi in CONTROL_RANGES for cp in range(lo, hi + 1)}
    if unicodedata.unidata_version == "14.0.0":
        expected = {
            cp
            for cp in range(0x110000)
            if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Co") and cp not in (0x200C, 0x200D)
        }
        assert listed == expected
    assert all(control_char(chr(cp)) is not None for cp in listed)
