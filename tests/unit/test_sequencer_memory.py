"""The embedded sequencer's bound (src/flare_im/backends/sequencer/memory.py): at most ``max_counters``
counters, a dropped one re-seeded from the durable log as on a cold start, and never one whose last seq the
log does not hold yet (a seq is never handed out twice)."""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict

import pytest

from flare_im.backends.sequencer.memory import MemorySequencer


class Log:
    """The durable log as the sequencer sees it: the max seq stored per conversation."""

    def __init__(self) -> None:
        self.stored: dict[str, set[int]] = {}
        self.seeds: list[str] = []

    async def max_seq(self, conv: str) -> int:
        self.seeds.append(conv)
        await asyncio.sleep(0)
        return max(self.stored.get(conv, ()), default=0)

    def store(self, conv: str, seq: int) -> None:
        seqs = self.stored.setdefault(conv, set())
        assert seq not in seqs, f"seq {seq} of {conv} handed out twice"
        seqs.add(seq)


async def test_counters_cycle_through_a_tiny_bound_and_resume_from_the_log() -> None:
    log = Log()
    counters: OrderedDict[str, int] = OrderedDict()
    sequencer = MemorySequencer(log.max_seq, max_counters=3, counters=counters)
    convs = [f"g:c{i}" for i in range(20)]
    got: dict[str, list[int]] = {c: [] for c in convs}
    for _ in range(5):
        for conv in convs:
            for _ in range(2):
                seq = await sequencer.next_seq(conv)
                log.store(conv, seq)  # the append, before the next send
                got[conv].append(seq)
                assert len(counters) <= 3
    for conv in convs:
        assert got[conv] == list(range(1, 11))  # strictly increasing, no gap, across every re-seed
    assert log.seeds.count("g:c0") > 1  # it was dropped and read again


async def test_recently_used_counters_are_kept() -> None:
    log = Log()
    counters: OrderedDict[str, int] = OrderedDict()
    sequencer = MemorySequencer(log.max_seq, max_counters=2, counters=counters)
    for conv in ("g:hot", "g:a", "g:hot", "g:b", "g:hot", "g:c"):
        log.store(conv, await sequencer.next_seq(conv))
    assert list(counters) == ["g:hot", "g:c"]
    seeds = len(log.seeds)
    assert await sequencer.next_seq("g:hot") == 4
    assert len(log.seeds) == seeds  # served from its counter: no read


async def test_a_counter_whose_seq_is_not_stored_yet_is_kept() -> None:
    log = Log()
    counters: OrderedDict[str, int] = OrderedDict()
    sequencer = MemorySequencer(log.max_seq, max_counters=1, counters=counters)
    in_flight = await sequencer.next_seq("g:a")  # its append has not committed
    log.store("g:b", await sequencer.next_seq("g:b"))
    assert list(counters) == ["g:a", "g:b"]  # above the bound rather than lose g:a's seq 1
    assert await sequencer.next_seq("g:a") == in_flight + 1
    log.store("g:a", in_flight)
    log.store("g:a", in_flight + 1)
    log.store("g:c", await sequencer.next_seq("g:c"))
    assert len(counters) == 1  # back at the bound once the appends are stored
    assert await sequencer.next_seq("g:a") == 3


async def test_a_failed_eviction_read_does_not_fail_the_call() -> None:
    log = Log()
    counters: OrderedDict[str, int] = OrderedDict()
    broken = False

    async def seed(conv: str) -> int:
        if broken and conv == "g:a":
            raise OSError("disk")
        return await log.max_seq(conv)

    sequencer = MemorySequencer(seed, max_counters=1, counters=counters)
    log.store("g:a", await sequencer.next_seq("g:a"))
    broken = True
    assert await sequencer.next_seq("g:b") == 1
    assert len(counters) == 2
    broken = False
    log.store("g:b", 1)
    assert await sequencer.next_seq("g:c") == 1
    assert len(counters) == 1


async def test_concurrent_sends_over_many_conversations_never_reuse_a_seq() -> None:
    """Appends commit after a random delay while new conversations keep pushing counters out."""
    rng = random.Random(7)
    log = Log()
    counters: OrderedDict[str, int] = OrderedDict()
    sequencer = MemorySequencer(log.max_seq, max_counters=2, counters=counters)
    convs = [f"d:u{i}:v{i}" for i in range(6)]
    order: dict[str, list[int]] = {c: [] for c in convs}
    peak = 0

    async def send(conv: str) -> None:
        nonlocal peak
        for _ in range(rng.randrange(12)):
            await asyncio.sleep(0)
        seq = await sequencer.next_seq(conv)
        order[conv].append(seq)
        peak = max(peak, len(counters))
        for _ in range(rng.randrange(12)):
            await asyncio.sleep(0)
        log.store(conv, seq)

    for _ in range(30):
        await asyncio.gather(*(send(rng.choice(convs)) for _ in range(20)))
        assert len(counters) <= len(convs)  # over the bound only by counters with appends in flight
    for conv in convs:
        assert sorted(order[conv]) == list(range(1, len(order[conv]) + 1))  # each seq once, no gap
    log.store("g:last", await sequencer.next_seq("g:last"))
    assert len(counters) <= 2  # everything stored: back at the bound
    assert peak > 2  # appends were in flight when counters were due to go


def test_the_bound_must_be_positive() -> None:
    async def seed(conv: str) -> int:
        return 0

    with pytest.raises(ValueError, match="max_counters"):
        MemorySequencer(seed, max_counters=0)
