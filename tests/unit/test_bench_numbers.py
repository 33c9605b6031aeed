"""The benchmark's arithmetic (flare_im.benchmark.stats/runner) and the gateway's frame builder."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from array import array

import pytest

from flare_im.benchmark.load import Endpoint, WorkerResult
from flare_im.benchmark.runner import LoadOptions, _load_report, _merge, _split
from flare_im.benchmark.stats import LatencySummary, ProcSample, cpu_percent, percentile, rate, sample_process
from flare_im.gateway.output import OutputBatcher, ws_frame


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 0.999) == 100
    assert percentile(values, 1.0) == 100
    assert percentile(values, 0.0) == 1
    assert percentile([], 0.5) == 0.0
    assert percentile([7], 0.99) == 7
    with pytest.raises(ValueError, match="q must be"):
        percentile(values, 1.5)


def test_latency_summary_from_nanoseconds() -> None:
    samples = [i * 1_000_000 for i in range(1, 1001)]  # 1..1000 ms
    s = LatencySummary.from_ns(list(reversed(samples)))  # order does not matter
    assert (s.count, s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms) == (1000, 500.0, 990.0, 999.0, 1000.0)
    assert s.mean_ms == pytest.approx(500.5)
    assert LatencySummary.from_ns([]).count == 0


def test_rates_and_cpu() -> None:
    assert rate(1000, 2.0) == 500.0
    assert rate(5, 0.0) == 0.0
    before, after = ProcSample(cpu_s=1.0, rss_bytes=0, at_s=10.0), ProcSample(cpu_s=1.5, rss_bytes=0, at_s=11.0)
    assert cpu_percent(before, after) == 50.0


def test_sample_process_reads_proc() -> None:
    a = sample_process(os.getpid(), time.monotonic())
    sum(i * i for i in range(300_000))  # burn some CPU
    b = sample_process(os.getpid(), time.monotonic())
    assert b.cpu_s >= a.cpu_s
    assert a.rss_bytes > 1_000_000


def test_merge_adds_counts_and_concatenates_latencies() -> None:
    a = WorkerResult(sent=3, acked=3, delivered=2, lost=1, latencies_ns=array("q", [1, 2]), cpu_s=0.5)
    b = WorkerResult(sent=4, acked=4, delivered=4, latencies_ns=array("q", [3]), cpu_s=0.25)
    total = _merge([a, b])
    assert (total.sent, total.acked, total.delivered, total.lost) == (7, 7, 6, 1)
    assert list(total.latencies_ns) == [1, 2, 3]
    assert total.cpu_s == 0.75
    report = _load_report([a, b], LoadOptions(duration_s=1.0))
    assert report == {"processes": 2, "cpu_percent": 75.0, "per_process": [50.0, 25.0]}


def test_split_keeps_pairs_in_one_process() -> None:
    eps = [Endpoint(f"u{i}") for i in range(10)]
    parts = _split(eps, 3)
    assert sum(len(p) for p in parts) == 10
    for part in parts:
        users = [int(e.user[1:]) for e in part]
        assert all(users[i] + 1 == users[i + 1] for i in range(0, len(users), 2))  # (0,1), (2,3) ...


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f" + struct.pack("!Q", 65536)),
    ],
)
def test_ws_frame_headers(size: int, header: bytes) -> None:
    frame = ws_frame(b"x" * size, binary=False)
    assert frame == header + b"x" * size
    assert ws_frame(b"ab", binary=True)[:2] == b"\x82\x02"


class _FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing


async def test_output_batcher_writes_once_per_connection_per_iteration() -> None:
    out = OutputBatcher()
    a, b = _FakeTransport(), _FakeTransport()
    after: list[str] = []
    out.queue(a, b"1", lambda: after.append("a"))  # type: ignore[arg-type]
    out.queue(b, b"2", lambda: after.append("b"))  # type: ignore[arg-type]
    out.queue(a, b"3", lambda: after.append("a"))  # type: ignore[arg-type]
    assert a.writes == []
    assert b.writes == []
    await asyncio.sleep(0)
    assert (a.writes, b.writes) == ([b"13"], [b"2"])
    assert sorted(after) == ["a", "b"]
    out.queue(a, b"4", lambda: None)  # type: ignore[arg-type]
    out.flush_one(a)  # before a close frame
    assert a.writes[-1] == b"4"
    await asyncio.sleep(0)
    assert a.writes == [b"13", b"4"]
