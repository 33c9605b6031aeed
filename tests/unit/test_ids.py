"""Snowflake message ids and the version clock (src/flare_im/ids.py)."""

from __future__ import annotations

import itertools
import time
from types import SimpleNamespace

import pytest

from flare_im import ids
from flare_im.ids import COUNTER_BITS, EPOCH_MS, MAX_NODE, NODE_BITS, Snowflake, VersionClock, now_ms, snowflake_ms


class FakeTime:
    """Replaces the ``time`` module inside flare_im.ids: a wall clock the test sets."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def time(self) -> float:
        return self.ms / 1000

    def time_ns(self) -> int:
        return self.ms * 1_000_000


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    clock = FakeTime(EPOCH_MS + 1_000_000)
    monkeypatch.setattr(ids, "time", SimpleNamespace(time=clock.time, time_ns=clock.time_ns))
    return clock


def increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def node_of(message_id: int) -> int:
    return (message_id >> COUNTER_BITS) & MAX_NODE


def test_snowflake_ids_strictly_increase_and_are_unique() -> None:
    gen = Snowflake(5)
    out = [gen.next_id() for _ in range(100_000)]
    assert increasing(out)
    assert len(set(out)) == len(out)
    assert all(0 < i < 2**63 for i in (out[0], out[-1]))
    assert {node_of(i) for i in out} == {5}


def test_snowflake_ms_is_roughly_now() -> None:
    before = now_ms()
    message_id = Snowflake(1).next_id()
    after = now_ms()
    assert before - 1 <= snowflake_ms(message_id) <= after + 1
    assert abs(snowflake_ms(message_id) - int(time.time() * 1000)) < 1000


@pytest.mark.parametrize("node", [0, 1, 512, MAX_NODE])
def test_node_id_is_embedded(node: int) -> None:
    assert MAX_NODE == 1023 == (1 << NODE_BITS) - 1
    assert node_of(Snowflake(node).next_id()) == node


@pytest.mark.parametrize("node", [-1, MAX_NODE + 1, 10_000])
def test_node_id_out_of_bounds(node: int) -> None:
    with pytest.raises(ValueError, match="node id"):
        Snowflake(node)


def test_two_nodes_never_collide_in_the_same_millisecond(fake_time: FakeTime) -> None:
    a, b = Snowflake(1), Snowflake(2)
    ids_a = {a.next_id() for _ in range(100)}
    ids_b = {b.next_id() for _ in range(100)}
    assert not ids_a & ids_b


def test_snowflake_survives_the_clock_going_back(fake_time: FakeTime) -> None:
    gen = Snowflake(3)
    first = [gen.next_id() for _ in range(10)]
    fake_time.ms -= 5_000  # the wall clock jumps back five seconds
    after = [gen.next_id() for _ in range(10)]
    assert increasing(first + after)
    assert snowflake_ms(after[-1]) == fake_time.ms + 5_000  # keeps counting on its last millisecond


def test_snowflake_counter_overflow_moves_to_the_next_millisecond(fake_time: FakeTime) -> None:
    gen = Snowflake(7)
    out = [gen.next_id() for _ in range((1 << COUNTER_BITS) + 10)]  # more than one millisecond holds
    assert increasing(out)
    assert snowflake_ms(out[(1 << COUNTER_BITS) - 1]) == fake_time.ms
    assert snowflake_ms(out[-1]) == fake_time.ms + 1
    fake_time.ms += 1  # the real clock catches up with the borrowed millisecond: still no reuse
    more = [gen.next_id() for _ in range(5)]
    assert increasing(out + more)


def test_version_clock_strictly_increases() -> None:
    clock = VersionClock()
    out = [clock.next() for _ in range(100_000)]
    assert increasing(out)
    assert clock.current == out[-1]
    assert abs(out[0] - time.time_ns() // 1000) < 10_000_000  # microseconds of wall time


def test_version_clock_never_goes_below_its_floor() -> None:
    floor = time.time_ns() // 1000 + 3_600_000_000  # stored versions are an hour in the future
    clock = VersionClock(floor)
    assert clock.current == floor
    assert [clock.next() for _ in range(3)] == [floor + 1, floor + 2, floor + 3]


def test_version_clock_survives_the_clock_going_back(fake_time: FakeTime) -> None:
    clock = VersionClock()
    first = clock.next()
    assert first == fake_time.ms * 1000
    fake_time.ms -= 60_000
    assert clock.next() == first + 1
    fake_time.ms += 120_000
    assert clock.next() == fake_time.ms * 1000


def test_epoch_layout() -> None:
    assert EPOCH_MS == 1_735_689_600_000  # 2025-01-01T00:00:00Z
    assert snowflake_ms(0) == EPOCH_MS
    assert snowflake_ms((1234 << (NODE_BITS + COUNTER_BITS)) | (MAX_NODE << COUNTER_BITS) | 4095) == EPOCH_MS + 1234
