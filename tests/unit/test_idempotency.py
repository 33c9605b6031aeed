"""IdempotencyCache (src/flare_im/services/router.py): (sender, cmid) -> stored message or pending future."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from flare_im.protocol.frames import Message
from flare_im.services import router
from flare_im.services.router import IdempotencyCache


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
    """Replaces the ``time`` module inside flare_im.services.router with a monotonic clock the test moves."""
    fake = FakeMonotonic()
    monkeypatch.setattr(router, "time", SimpleNamespace(monotonic=fake))
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
    key = ("alice", "c-1")
    fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    cache.put(key, fut)
    assert cache.get(key) is fut
    m = message(1)
    cache.put(key, m)
    fut.set_result(m)
    assert cache.get(key) is m


def test_eviction_by_size_drops_the_oldest() -> None:
    cache = IdempotencyCache(window_s=300, max_entries=3)
    for i in range(5):
        cache.put(("alice", f"c-{i}"), message(i))
    assert cache.get(("alice", "c-0")) is None
    assert cache.get(("alice", "c-1")) is None
    assert [cache.get(("alice", f"c-{i}")) for i in (2, 3, 4)] == [message(2), message(3), message(4)]


def test_putting_a_key_again_makes_it_the_newest() -> None:
    cache = IdempotencyCache(window_s=300, max_entries=2)
    cache.put(("a", "1"), message(1))
    cache.put(("a", "2"), message(2))
    cache.put(("a", "1"), message(1))  # refreshed
    cache.put(("a", "3"), message(3))  # evicts ("a", "2"), now the oldest
    assert cache.get(("a", "2")) is None
    assert cache.get(("a", "1")) == message(1)
    assert cache.get(("a", "3")) == message(3)


def test_miss_is_not_authoritative_right_after_creation() -> None:
    # a fresh process has not seen the sends of the last window: the router must ask the log
    assert IdempotencyCache(window_s=300, max_entries=10).miss_is_authoritative() is False


def test_miss_is_authoritative_with_a_zero_window() -> None:
    cache = IdempotencyCache(window_s=0, max_entries=10)
    assert cache.miss_is_authoritative() is True
    cache.put(("a", "1"), message(1))
    assert cache.miss_is_authoritative() is True


def test_miss_becomes_authoritative_once_up_for_the_window(clock: FakeMonotonic) -> None:
    cache = IdempotencyCache(window_s=10, max_entries=10)
    clock.now += 9.9
    assert cache.miss_is_authoritative() is False
    clock.now += 0.1
    assert cache.miss_is_authoritative() is True


def test_entries_expire_after_the_window(clock: FakeMonotonic) -> None:
    cache = IdempotencyCache(window_s=10, max_entries=10)
    cache.put(("a", "old"), message(1))
    clock.now += 11
    cache.put(("a", "new"), message(2))  # expiry happens on put
    assert cache.get(("a", "old")) is None
    assert cache.get(("a", "new")) == message(2)
    assert cache.miss_is_authoritative() is True  # expiry does not lose keys of the window


def test_eviction_inside_the_window_makes_misses_non_authoritative(clock: FakeMonotonic) -> None:
    cache = IdempotencyCache(window_s=10, max_entries=2)
    clock.now += 10
    assert cache.miss_is_authoritative() is True
    evicted_at = clock.now
    cache.put(("a", "1"), message(1))
    clock.now += 1
    cache.put(("a", "2"), message(2))
    clock.now += 1
    cache.put(("a", "3"), message(3))  # evicts ("a", "1"), stored 2 s ago, still inside the window
    assert cache.get(("a", "1")) is None
    assert cache.miss_is_authoritative() is False
    clock.now = evicted_at + 9.9
    assert cache.miss_is_authoritative() is False
    clock.now = evicted_at + 10  # every key stored since the evicted one is still here, for a whole window
    assert cache.miss_is_authoritative() is True
