"""IdempotencyCache (src/flare_im/services/idempotency.py): exact recent entries plus Bloom filters; and the
keeper that restores a cluster's shared store from the log."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from tests.clock import ManualClock

from flare_im.backends.idempotency.base import CLAIMED, RECLAIMED
from flare_im.backends.idempotency.memory import MemoryIdempotencyState, MemoryIdempotencyStore
from flare_im.ids import now_ms
from flare_im.protocol.frames import Message
from flare_im.services import idempotency
from flare_im.services.idempotency import BloomFilter, IdempotencyCache, SharedIdempotencyKeeper


def message(seq: int, cmid: str = "c") -> Message:
    return Message(
        conv="g:x", seq=seq, msg_id=str(seq), sender="alice", cmid=cmid, kind="text", body={"text": "hi"}, ts=1
    )


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(idempotency, "time", SimpleNamespace(monotonic=fake))
    return fake


def test_get_put_discard() -> None:
    cache = IdempotencyCache(window_s=300, max_entries=10)
    key = ("alice", "c-1")
    assert cache.get(key) is None
    m = message(1)
    cache.put(key, m)
    assert cache.get(key) is m
    assert cache.get(("bob", "c-1")) is None  # the key is (sender, cmid)
    cache.discard(key)
    assert cache.get(key) is None
    cache.discard(key)  # discarding a missing key is a no-op


async def test_a_pending_future_is_replaced_by_the_message() -> None:
    cache = IdempotencyCache(window_s=300, max_entries=10)
    key = ("alice", "c")
    fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    cache.put(key, fut)
    assert cache.get(key) is fut
    cache.put(key, message(1))
    assert isinstance(cache.get(key), Message)


def test_exact_entries_are_bounded_oldest_first() -> None:
    cache = IdempotencyCache(window_s=300, max_entries=3)
    for i in range(5):
        cache.put(("alice", f"c{i}"), message(i))
    assert [cache.get(("alice", f"c{i}")) is not None for i in range(5)] == [False, False, True, True, True]


def test_misses_are_not_trusted_until_a_window_has_passed(clock: FakeMonotonic) -> None:
    cache = IdempotencyCache(window_s=300, max_entries=10)
    assert cache.maybe_stored(("alice", "never"))  # just started: the log must be asked
    clock.now += 301
    assert not cache.maybe_stored(("alice", "never"))


def test_a_complete_preload_is_trusted_at_once(clock: FakeMonotonic) -> None:
    cache = IdempotencyCache(window_s=300, max_entries=10)
    cache.preload([("alice", "old-1"), ("bob", "old-2")], complete=True)
    assert cache.maybe_stored(("alice", "old-1"))
    assert cache.maybe_stored(("bob", "old-2"))
    assert not cache.maybe_stored(("alice", "never"))
    incomplete = IdempotencyCache(window_s=300, max_entries=10)
    incomplete.preload([("alice", "old-1")], complete=False)
    assert incomplete.maybe_stored(("alice", "never"))


def test_keys_evicted_from_the_exact_map_stay_in_the_filters(clock: FakeMonotonic) -> None:
    cache = IdempotencyCache(window_s=300, max_entries=2)
    cache.preload([], complete=True)
    for i in range(100):
        assert not cache.claim(("alice", f"c{i}"))
        cache.put(("alice", f"c{i}"), message(i))
    assert cache.get(("alice", "c0")) is None
    assert all(cache.maybe_stored(("alice", f"c{i}")) for i in range(100))


def test_keys_survive_one_rotation_and_expire_after_two(clock: FakeMonotonic) -> None:
    cache = IdempotencyCache(window_s=300, max_entries=10)
    cache.preload([], complete=True)
    cache.claim(("alice", "k"))
    clock.now += 299
    assert cache.maybe_stored(("alice", "k"))
    clock.now += 2  # a new epoch: the key is in the previous one
    assert cache.maybe_stored(("alice", "k"))
    clock.now += 301  # two epochs later it is gone (beyond the window)
    assert not cache.maybe_stored(("alice", "k"))


def test_window_zero_disables_the_filters() -> None:
    cache = IdempotencyCache(window_s=0, max_entries=10)
    assert not cache.claim(("alice", "k"))
    assert not cache.maybe_stored(("alice", "k"))


def test_bloom_filter_has_no_false_negatives_and_few_false_positives() -> None:
    bloom = BloomFilter(10_000)
    for i in range(10_000):
        bloom.add(("u", f"in-{i}"))
    assert all(("u", f"in-{i}") in bloom for i in range(10_000))
    false_positives = sum(("u", f"out-{i}") in bloom for i in range(20_000))
    assert false_positives < 20_000 * 0.03  # ~1.2% expected at capacity
    assert bloom.full


def test_filters_grow_when_full(clock: FakeMonotonic) -> None:
    cache = IdempotencyCache(window_s=300, max_entries=10, bloom_capacity=1024)
    cache.preload([], complete=True)
    keys = [("u", f"k{i}") for i in range(5000)]
    for k in keys:
        cache.claim(k)
    assert all(cache.maybe_stored(k) for k in keys)
    misses = sum(cache.maybe_stored(("u", f"x{i}")) for i in range(5000))
    assert misses < 5000 * 0.1


async def until_vouched(store: MemoryIdempotencyStore, timeout_s: float = 10.0) -> None:
    """Wait for the keeper (checking every 10 ms) to restore ``store``: as long as a busy machine needs."""
    async with asyncio.timeout(timeout_s):
        while not await store.vouched():  # noqa: ASYNC110 - the keeper restores it from its own task
            await asyncio.sleep(0.01)


async def test_keeper_restores_a_store_that_lost_its_data() -> None:
    state = MemoryIdempotencyState()
    store = MemoryIdempotencyStore(state)
    asked: list[tuple[int, int]] = []

    async def recent(since_ms: int, limit: int) -> list[tuple[str, str]]:
        asked.append((since_ms, limit))
        return [("alice", "m1"), ("alice", "m2")]

    keeper = SharedIdempotencyKeeper(store, recent, window_s=300.0, check_s=0.01, limit=10)
    assert await store.reserve("alice", "m0", 60) == RECLAIMED  # a new store vouches for nothing yet
    keeper.start()
    try:
        await until_vouched(store)
        assert abs(asked[0][0] - (now_ms() - 300_000)) < 5_000  # the sends of the last window
        assert await store.reserve("alice", "m2", 60) == RECLAIMED  # restored from the log
        assert await store.reserve("alice", "m3", 60) == CLAIMED
        calls = len(asked)
        await asyncio.sleep(0.05)
        assert len(asked) == calls  # vouched: the log is not read again

        state.clear()  # Redis restarted empty
        await until_vouched(store)
        assert len(asked) == calls + 1
    finally:
        await keeper.close()


async def test_keeper_with_more_keys_than_it_reads_vouches_only_after_the_window() -> None:
    clock = ManualClock()
    store = MemoryIdempotencyStore(clock=clock)

    async def recent(since_ms: int, limit: int) -> list[tuple[str, str]]:
        return [("alice", f"m{i}") for i in range(limit)]  # the log holds at least this many

    keeper = SharedIdempotencyKeeper(store, recent, window_s=300.0, limit=3)
    assert await keeper.check()
    assert not await store.vouched()
    clock.advance(299.0)
    assert not await store.vouched()
    clock.advance(2.0)
    assert await store.vouched()


def test_a_one_second_window_keeps_its_filters(clock: FakeMonotonic) -> None:
    cache = IdempotencyCache(window_s=1, max_entries=10)
    cache.preload([("alice", "old")], complete=True)
    assert cache.maybe_stored(("alice", "old"))
    assert cache.claim(("alice", "old"))  # the log must be asked: it may be stored
    assert not cache.claim(("alice", "new"))


async def test_keeper_restores_at_start_not_after_its_interval() -> None:
    store = MemoryIdempotencyStore()

    async def recent(since_ms: int, limit: int) -> list[tuple[str, str]]:
        return []

    keeper = SharedIdempotencyKeeper(store, recent, window_s=300.0, check_s=3600.0)
    keeper.start()
    try:
        await until_vouched(store)
    finally:
        await keeper.close()


async def test_keeper_asks_the_log_for_exactly_one_window() -> None:
    store = MemoryIdempotencyStore()
    asked: list[int] = []

    async def recent(since_ms: int, limit: int) -> list[tuple[str, str]]:
        asked.append(since_ms)
        return []

    keeper = SharedIdempotencyKeeper(store, recent, window_s=100_000.0)
    assert await keeper.check()
    assert abs(asked[0] - (now_ms() - 100_000_000)) < 5_000
    assert await keeper.check()  # vouched now: says so without reading the log again
    assert len(asked) == 1
