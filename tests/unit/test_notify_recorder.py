"""The push worker's recorder (``aio.GroupWriter``, as services/notify_worker.py uses it): outcomes that come
back close together share one store write, the first waiting at most the linger; a full group is written at
once; a failed write fails exactly the outcomes it carried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from flare_im.aio import GroupWriter as _Recorder
from flare_im.backends.relational.notifications import PushJob


def _job(i: int) -> PushJob:
    return PushJob(f"j{i}", "alice", "phone", "apns", "message", "d:alice:bob", i, "sent")


class _Store:
    def __init__(self, fail: bool = False) -> None:
        self.writes: list[list[str]] = []
        self.fail = fail

    async def write(self, jobs: Sequence[PushJob]) -> None:
        self.writes.append([j.job_id for j in jobs])
        await asyncio.sleep(0)
        if self.fail:
            raise OSError("disk full")


async def test_outcomes_within_the_linger_share_one_write() -> None:
    store = _Store()
    recorder = _Recorder(store.write, linger_s=1.0, group=100)  # long: a loaded machine still fits 3 in it

    async def later(i: int) -> None:
        await asyncio.sleep(0.01 * i)
        await recorder.record(_job(i))

    started = time.monotonic()
    await asyncio.gather(*(later(i) for i in range(3)))
    assert store.writes == [["j0", "j1", "j2"]]
    assert time.monotonic() - started < 5.0  # the linger bounds the wait


async def test_a_full_group_is_written_without_waiting_for_the_linger() -> None:
    store = _Store()
    recorder = _Recorder(store.write, linger_s=30.0, group=4)
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(recorder.record(_job(i)) for i in range(4))), 5)
    assert store.writes == [["j0", "j1", "j2", "j3"]]
    assert time.monotonic() - started < 5


async def test_without_a_linger_the_first_outcome_is_written_alone() -> None:
    store = _Store()
    recorder = _Recorder(store.write)
    first = asyncio.ensure_future(recorder.record(_job(0)))
    await asyncio.sleep(0)  # the write of the first one starts
    await asyncio.gather(first, recorder.record(_job(1)), recorder.record(_job(2)))
    assert store.writes == [["j0"], ["j1", "j2"]]


async def test_a_failed_write_fails_its_outcomes_and_the_next_ones_are_written() -> None:
    store = _Store(fail=True)
    recorder = _Recorder(store.write, linger_s=0.01)
    results = await asyncio.gather(recorder.record(_job(0)), recorder.record(_job(1)), return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]
    store.fail = False
    await recorder.record(_job(2))
    assert store.writes == [["j0", "j1"], ["j2"]]


@pytest.mark.parametrize("linger_s", [0.0, 0.01])
async def test_every_outcome_is_written_once(linger_s: float) -> None:
    store = _Store()
    recorder = _Recorder(store.write, linger_s=linger_s, group=7)

    async def later(i: int) -> None:
        await asyncio.sleep(0.001 * (i % 5))
        await recorder.record(_job(i))

    await asyncio.gather(*(later(i) for i in range(50)))
    written = [j for w in store.writes for j in w]
    assert sorted(written) == sorted(f"j{i}" for i in range(50))
