"""`flare bench soak`: the p2p load held for a long time, with a trend line every interval.

A long run shows what a 10-second run cannot: a write-ahead log that is never reset, a cache without a
bound, a slow leak. Each interval prints delivered and acked msgs/s, the latency percentiles of the
messages delivered in it, the server's CPU over it and its RSS at its end, and the size of every file of
the server's data directory. The report compares the first and the last minute.

On a machine whose speed drifts (a shared VM: the same server at the same rate can cost 10 % more CPU an
hour later), the last minute against the first mixes the server's ageing with the machine's. ``--control``
then runs a fresh server for one minute right after, at the same rate and pinning: the last minute against
that one is the server's own drift, the control against the first minute the machine's.

Memory stays bounded however long the run: the workers keep only what is in flight and the latencies of
the current interval; here, only those of the first and of the last minute are kept.
"""

from __future__ import annotations

import os
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from flare_im.benchmark.runner import LoadOptions, Server, bench_p2p
from flare_im.benchmark.stats import LatencySummary, ProcSample, cpu_percent

MINUTE_S = 60.0


@dataclass(frozen=True, slots=True)
class TrendRow:
    t_s: float  # end of the interval, seconds into the measured window
    delivered_per_s: float
    acked_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_percent: float | None  # server CPU over the interval (100 = one core)
    rss_mb: float | None  # server RSS at its end
    files: dict[str, int]  # bytes of each file of the data directory at its end


@dataclass(slots=True)
class _Interval:
    start_s: float
    end_s: float
    latencies: array[int]
    delivered: int
    before: ProcSample | None
    after: ProcSample | None


def data_files(data_dir: str | None) -> dict[str, int]:
    """Size in bytes of every file under ``data_dir``, by path relative to it (a file may vanish meanwhile)."""
    if not data_dir:
        return {}
    root = Path(data_dir)
    sizes: dict[str, int] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                sizes[str(path.relative_to(root))] = path.stat().st_size
            except FileNotFoundError:
                continue
    return dict(sorted(sizes.items()))


class Trend:
    """Turns the workers' tick messages into rows, and keeps the first and last minute for the summary."""

    def __init__(self, tick_s: float, duration_s: float, data_dir: str | None, emit: Callable[[str], None]) -> None:
        self._tick_s = tick_s
        self._duration_s = duration_s
        self._data_dir = data_dir
        self._emit = emit
        self._ticks = 0
        self._delivered = 0
        self._acked = 0
        self.rows: list[TrendRow] = []
        self._first: list[_Interval] = []
        self._last: deque[_Interval] = deque()

    def add(self, messages: list[tuple[Any, ...]], before: ProcSample | None, after: ProcSample | None) -> None:
        """One tick: a ("tick", n, delivered, acked, errors, latencies) message per worker, counts cumulative."""
        self._ticks += 1
        start_s = (self._ticks - 1) * self._tick_s
        end_s = min(self._ticks * self._tick_s, self._duration_s)
        latencies: array[int] = array("q")
        delivered = acked = 0
        for message in messages:
            delivered += message[2]
            acked += message[3]
            latencies.extend(message[5])
        span = max(end_s - start_s, 1e-9)
        interval = _Interval(start_s, end_s, latencies, delivered - self._delivered, before, after)
        summary = LatencySummary.from_ns(latencies)
        row = TrendRow(
            t_s=round(end_s, 1),
            delivered_per_s=round((delivered - self._delivered) / span, 1),
            acked_per_s=round((acked - self._acked) / span, 1),
            p50_ms=summary.p50_ms,
            p99_ms=summary.p99_ms,
            cpu_percent=cpu_percent(before, after) if before and after else None,
            rss_mb=round(after.rss_bytes / 2**20, 1) if after else None,
            files=data_files(self._data_dir),
        )
        self._delivered, self._acked = delivered, acked
        self.rows.append(row)
        if not self._first or start_s < MINUTE_S:
            self._first.append(interval)
        self._last.append(interval)
        while len(self._last) > 1 and end_s - self._last[1].start_s >= MINUTE_S:
            self._last.popleft()
        if len(self.rows) == 1:
            self._emit(header())
        self._emit(format_row(row))

    def summary(self) -> dict[str, Any]:
        """The first and the last minute (or the intervals that cover it), and how the last compares."""
        if not self.rows:
            return {}
        first, last = _window(self._first), _window(list(self._last))
        return {
            "interval_s": self._tick_s,
            "first_minute": first,
            "last_minute": last,
            "last_to_first": ratios(last, first),
            "rss_mb": {"first": self.rows[0].rss_mb, "last": self.rows[-1].rss_mb},
            "files": {"first": self.rows[0].files, "last": self.rows[-1].files},
            "trend": [asdict(r) for r in self.rows],
        }


def ratios(window: dict[str, Any], reference: dict[str, Any]) -> dict[str, float | None]:
    """p99 and CPU of ``window`` over those of ``reference`` (None where either is missing)."""
    out: dict[str, float | None] = {}
    for key in ("p99_ms", "cpu_percent"):
        a, b = reference.get(key), window.get(key)
        out[key.split("_")[0]] = round(b / a, 2) if a and b is not None else None
    return out


def _window(intervals: list[_Interval]) -> dict[str, Any]:
    latencies: array[int] = array("q")
    for interval in intervals:
        latencies.extend(interval.latencies)
    summary = LatencySummary.from_ns(latencies)
    start, end = intervals[0], intervals[-1]
    span = max(end.end_s - start.start_s, 1e-9)
    cpu = cpu_percent(start.before, end.after) if start.before and end.after else None
    return {
        "from_s": round(start.start_s, 1),
        "to_s": round(end.end_s, 1),
        "delivered_per_s": round(sum(i.delivered for i in intervals) / span, 1),
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "cpu_percent": cpu,
    }


def _size(n: int) -> str:
    for unit, scale in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n}B"


def header() -> str:
    return f"{'t_s':>7} {'deliv/s':>9} {'acked/s':>9} {'p50_ms':>8} {'p99_ms':>8} {'cpu%':>6} {'rss_mb':>7}  files"


def format_row(row: TrendRow) -> str:
    cpu = f"{row.cpu_percent:6.1f}" if row.cpu_percent is not None else f"{'-':>6}"
    rss = f"{row.rss_mb:7.1f}" if row.rss_mb is not None else f"{'-':>7}"
    files = "  ".join(f"{name} {_size(size)}" for name, size in row.files.items())
    return (
        f"{row.t_s:7.0f} {row.delivered_per_s:9.1f} {row.acked_per_s:9.1f} {row.p50_ms:8.2f} {row.p99_ms:8.2f}"
        f" {cpu} {rss}  {files}"
    )


def bench_soak(
    server: Server, pairs: int, opts: LoadOptions, data_dir: str | None, emit: Callable[[str], None]
) -> dict[str, Any]:
    """The p2p load of ``bench_p2p`` with a trend line every ``opts.tick_s``; the report replaces the
    whole-run latency with the first and last minute's and carries the trend rows."""
    if opts.tick_s <= 0:
        raise ValueError("soak needs an interval > 0")
    trend = Trend(opts.tick_s, opts.duration_s, data_dir or server.data_dir, emit)
    report = bench_p2p(server, pairs, opts, on_tick=trend.add)
    report["benchmark"] = "soak"
    del report["latency_ms"]  # not kept over a long run: see first_minute and last_minute
    report.update(trend.summary())
    return report


def control_options(opts: LoadOptions) -> LoadOptions:
    """The control run's load: the soak's, for one minute (or the soak's duration if shorter), in one interval
    per trend interval up to a minute."""
    duration_s = min(MINUTE_S, opts.duration_s)
    return replace(opts, duration_s=duration_s, tick_s=min(opts.tick_s, duration_s))


def add_control(report: dict[str, Any], control: dict[str, Any]) -> None:
    """Put a fresh server's minute (``bench_soak`` of ``control_options``) in a soak's ``report``."""
    minute = control["first_minute"]
    report["control_minute"] = {**minute, "loss": control["loss"], "errors": control["errors"]}
    report["last_to_control"] = ratios(report["last_minute"], minute)
    report["control_to_first"] = ratios(minute, report["first_minute"])
