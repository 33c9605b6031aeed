"""The benchmark's arithmetic (flare_im.benchmark.stats/runner) and the gateway's frame builder."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from array import array
from pathlib import Path

import pytest

from flare_im.benchmark.load import Endpoint, WorkerPlan, WorkerResult, _match, tick_count
from flare_im.benchmark.runner import LoadOptions, _load_report, _merge, _split
from flare_im.benchmark.soak import Trend, data_files, format_row, header
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

    def write(self, data: bytes) -> None:
        self.writes.append(data)


async def test_output_batcher_writes_once_per_connection_per_iteration() -> None:
    out = OutputBatcher()
    a, b = _FakeTransport(), _FakeTransport()
    out.queue(a, b"1", a.write)  # type: ignore[arg-type]
    out.queue(b, b"2", b.write)  # type: ignore[arg-type]
    out.queue(a, b"3", a.write)  # type: ignore[arg-type]
    assert a.writes == []
    assert b.writes == []
    await asyncio.sleep(0)
    assert (a.writes, b.writes) == ([b"13"], [b"2"])
    out.queue(a, b"4", a.write)  # type: ignore[arg-type]
    out.flush_one(a)  # before a close frame
    assert a.writes[-1] == b"4"
    await asyncio.sleep(0)
    assert a.writes == [b"13", b"4"]


def test_loss_keys_pair_acks_and_deliveries_in_either_order() -> None:
    acks: set[tuple[str, int]] = set()
    deliveries: set[tuple[str, int]] = set()
    _match(("c", 1), deliveries, acks)  # acked first
    _match(("c", 2), acks, deliveries)  # delivered first
    assert (acks, deliveries) == ({("c", 1)}, {("c", 2)})
    _match(("c", 1), acks, deliveries)
    _match(("c", 2), deliveries, acks)
    assert (acks, deliveries) == (set(), set())  # a long run keeps only what is in flight


def test_tick_count_covers_the_window() -> None:
    plan = WorkerPlan(protocol="flare", url="", endpoints=[], duration_s=300.0, tick_s=30.0)
    assert tick_count(plan) == 10
    plan.duration_s = 10.0
    plan.tick_s = 3.0
    assert tick_count(plan) == 4  # 3, 6, 9 and the window's end
    plan.duration_s = 0.0
    assert tick_count(plan) == 1


def _tick(n: int, delivered: int, acked: int, latencies_ms: list[int]) -> tuple[object, ...]:
    return ("tick", n, delivered, acked, 0, array("q", [ms * 1_000_000 for ms in latencies_ms]))


def test_soak_trend_rows_and_first_and_last_minute(tmp_path: Path) -> None:
    (tmp_path / "flare.db").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.db-wal").write_bytes(b"y" * 7)
    lines: list[str] = []
    trend = Trend(30.0, 150.0, str(tmp_path), lines.append)
    samples = [ProcSample(cpu_s=10.0 * i, rss_bytes=(100 + i) * 2**20, at_s=30.0 * i) for i in range(6)]
    # Two workers; counts are cumulative over the window, latencies only those of the tick.
    per_tick = [([1, 2], [3]), ([4], [5]), ([6], [7]), ([8], [9]), ([10], [20])]
    for i, (lat_a, lat_b) in enumerate(per_tick, start=1):
        trend.add([_tick(i, 300 * i, 310 * i, lat_a), _tick(i, 600 * i, 600 * i, lat_b)], samples[i - 1], samples[i])
    assert [r.t_s for r in trend.rows] == [30.0, 60.0, 90.0, 120.0, 150.0]
    first = trend.rows[0]
    assert (first.delivered_per_s, first.acked_per_s, first.p50_ms, first.p99_ms) == (30.0, 30.3, 2.0, 3.0)
    assert (first.cpu_percent, first.rss_mb) == (pytest.approx(33.3), 101.0)
    assert first.files == {"flare.db": 100, "sub/other.db-wal": 7}
    assert len(lines) == 6  # a header, then one line per tick
    assert lines[0] == header()
    assert lines[1] == format_row(first)
    summary = trend.summary()
    assert summary["first_minute"] == {
        "from_s": 0.0,
        "to_s": 60.0,
        "delivered_per_s": 30.0,
        "p50_ms": 3.0,
        "p99_ms": 5.0,
        "cpu_percent": pytest.approx(33.3),
    }
    assert (summary["last_minute"]["from_s"], summary["last_minute"]["to_s"]) == (90.0, 150.0)
    assert summary["last_minute"]["p99_ms"] == 20.0
    assert summary["last_to_first"] == {"p99": 4.0, "cpu": 1.0}
    assert summary["rss_mb"] == {"first": 101.0, "last": 105.0}
    assert len(summary["trend"]) == 5


def test_data_files_of_no_directory() -> None:
    assert data_files(None) == {}
