"""Contract of the Sequencer port (src/flare_im/backends/sequencer/base.py), for every backend.

``seed_log`` (see conftest.py) stands in for the durable log's ``max_seq``: the sequencer seeds from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from flare_im.backends.sequencer.base import SeedFn, Sequencer


async def test_first_seq_follows_the_durable_log(sequencer: Sequencer, seed_log: Any) -> None:
    seed_log.max_seq["g:a"] = 41
    assert await sequencer.next_seq("g:a") == 42
    assert await sequencer.next_seq("g:empty") == 1  # nothing stored: seqs start at 1
    assert seed_log.calls == ["g:a", "g:empty"]


async def test_seqs_strictly_increase_without_gaps(sequencer: Sequencer, seed_log: Any) -> None:
    seed_log.max_seq["g:a"] = 7
    got = [await sequencer.next_seq("g:a") for _ in range(100)]
    assert got == list(range(8, 108))
    assert seed_log.calls == ["g:a"]  # seeded once, then served from its own state


async def test_conversations_are_independent(sequencer: Sequencer, seed_log: Any) -> None:
    seed_log.max_seq.update({"g:a": 10, "g:b": 100})
    got = [(c, await sequencer.next_seq(c)) for c in ("g:a", "g:b", "g:a", "d:x:y", "g:b", "g:a")]
    assert got == [("g:a", 11), ("g:b", 101), ("g:a", 12), ("d:x:y", 1), ("g:b", 102), ("g:a", 13)]
    assert sorted(seed_log.calls) == ["d:x:y", "g:a", "g:b"]


async def test_concurrent_first_calls_share_one_seed(sequencer: Sequencer, seed_log: Any) -> None:
    seed_log.max_seq["g:a"] = 20
    seed_log.gate.clear()  # hold the seed read until every task is waiting for a seq
    tasks = [asyncio.ensure_future(sequencer.next_seq("g:a")) for _ in range(50)]
    for _ in range(5):
        await asyncio.sleep(0)
    seed_log.gate.set()

    got = await asyncio.gather(*tasks)
    assert sorted(got) == list(range(21, 71))  # distinct and consecutive
    assert seed_log.calls == ["g:a"]


async def test_concurrent_calls_over_many_conversations(sequencer: Sequencer, seed_log: Any) -> None:
    convs = [f"g:c{i}" for i in range(10)]
    seed_log.max_seq.update({c: i * 3 for i, c in enumerate(convs)})
    got = await asyncio.gather(*(sequencer.next_seq(c) for _ in range(20) for c in convs))
    by_conv: dict[str, list[int]] = {c: [] for c in convs}
    for i, seq in enumerate(got):
        by_conv[convs[i % len(convs)]].append(seq)
    for i, c in enumerate(convs):
        assert sorted(by_conv[c]) == list(range(i * 3 + 1, i * 3 + 21))
    assert sorted(seed_log.calls) == sorted(convs)


async def test_forget_reseeds_from_the_log(sequencer: Sequencer, seed_log: Any) -> None:
    seed_log.max_seq["g:a"] = 10
    assert await sequencer.next_seq("g:a") == 11
    assert await sequencer.next_seq("g:a") == 12
    # seq 12 was never stored (its append failed): the log still ends at 11
    seed_log.max_seq["g:a"] = 11
    sequencer.forget("g:a")
    assert await sequencer.next_seq("g:a") == 12  # handed out again, no gap
    assert await sequencer.next_seq("g:a") == 13
    assert seed_log.calls == ["g:a", "g:a"]


async def test_forget_only_touches_its_conversation(sequencer: Sequencer, seed_log: Any) -> None:
    assert await sequencer.next_seq("g:a") == 1
    assert await sequencer.next_seq("g:b") == 1
    sequencer.forget("g:a")
    sequencer.forget("g:never-used")  # a no-op
    seed_log.max_seq["g:a"] = 1
    assert await sequencer.next_seq("g:a") == 2
    assert await sequencer.next_seq("g:b") == 2
    assert seed_log.calls == ["g:a", "g:b", "g:a"]


async def test_a_new_sequencer_seeds_from_the_log(
    sequencer_factory: Callable[[SeedFn], Sequencer], seed_log: Any
) -> None:
    # A new sequencer (a restart) seeds from the log, whatever an earlier instance handed out.
    first = sequencer_factory(seed_log)
    for _ in range(5):
        await first.next_seq("g:a")
    seed_log.max_seq["g:a"] = 5
    second = sequencer_factory(seed_log)
    assert await second.next_seq("g:a") == 6


# ---------------------------------------------------------------- several nodes over one shared state


async def test_instances_sharing_state_never_hand_out_the_same_seq(sequencer_backend: Any, seed_log: Any) -> None:
    seed_log.max_seq.update({"g:a": 10})
    first: Sequencer = sequencer_backend.open(seed_log)
    second: Sequencer = sequencer_backend.open(seed_log)
    calls = [(s, c) for _ in range(100) for s in (first, second) for c in ("g:a", "g:b")]
    got = await asyncio.gather(*(s.next_seq(c) for s, c in calls))
    by_conv: dict[str, list[int]] = {"g:a": [], "g:b": []}
    for (_, conv), seq in zip(calls, got, strict=True):
        by_conv[conv].append(seq)
    assert sorted(by_conv["g:a"]) == list(range(11, 211))  # distinct, no gap, above the log
    assert sorted(by_conv["g:b"]) == list(range(1, 201))


async def test_each_instance_only_moves_forward(sequencer_backend: Any, seed_log: Any) -> None:
    nodes: list[Sequencer] = [sequencer_backend.open(seed_log) for _ in range(3)]

    async def node_sends(sequencer: Sequencer) -> list[int]:
        out = []
        for _ in range(50):
            out.append(await sequencer.next_seq("g:a"))
            await asyncio.sleep(0)
        return out

    per_node = await asyncio.gather(*(node_sends(s) for s in nodes))
    for seqs in per_node:
        assert seqs == sorted(set(seqs))  # strictly increasing as one node sees them
    assert sorted(s for seqs in per_node for s in seqs) == list(range(1, 151))


async def test_flush_mid_conversation_reseeds_from_the_durable_log(sequencer_backend: Any, seed_log: Any) -> None:
    first: Sequencer = sequencer_backend.open(seed_log)
    second: Sequencer = sequencer_backend.open(seed_log)
    stored: list[int] = []

    async def send(sequencer: Sequencer) -> int:
        seq = await sequencer.next_seq("g:a")
        stored.append(seq)
        seed_log.max_seq["g:a"] = max(seed_log.max_seq.get("g:a", 0), seq)
        return seq

    for i in range(10):
        await send((first, second)[i % 2])
    assert stored == list(range(1, 11))
    await first.next_seq("g:a")  # 11: handed out, its append never lands

    await sequencer_backend.flush()  # Redis restarted empty
    assert await send(second) == 11  # max(durable) + 1: nothing stored is handed out again
    more = await asyncio.gather(*(send((first, second)[i % 2]) for i in range(40)))
    assert sorted(more) == list(range(12, 52))
    assert len(set(stored)) == len(stored) == 51


async def test_flush_with_concurrent_callers_shares_one_seed(sequencer_backend: Any, seed_log: Any) -> None:
    sequencer: Sequencer = sequencer_backend.open(seed_log)
    for _ in range(5):
        await sequencer.next_seq("g:a")
    seed_log.max_seq["g:a"] = 5
    await sequencer_backend.flush()
    seed_log.calls.clear()
    seed_log.gate.clear()
    tasks = [asyncio.ensure_future(sequencer.next_seq("g:a")) for _ in range(30)]
    for _ in range(5):
        await asyncio.sleep(0)
    seed_log.gate.set()
    assert sorted(await asyncio.gather(*tasks)) == list(range(6, 36))
    assert seed_log.calls == ["g:a"]
