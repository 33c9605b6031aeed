"""Numbers a benchmark reports, computed from raw samples (kept separate so they are unit-tested)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest-rank; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be within 0..1")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[rank - 1])


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int]) -> LatencySummary:
        values = sorted(samples_ns)
        if not values:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        ms = 1e-6
        return cls(
            count=len(values),
            p50_ms=round(percentile(values, 0.50) * ms, 3),
            p99_ms=round(percentile(values, 0.99) * ms, 3),
            p999_ms=round(percentile(values, 0.999) * ms, 3),
            max_ms=round(values[-1] * ms, 3),
            mean_ms=round(sum(values) / len(values) * ms, 3),
        )


@dataclass(frozen=True, slots=True)
class ProcSample:
    """CPU seconds (user+system) and resident memory of a process at one instant."""

    cpu_s: float
    rss_bytes: int
    at_s: float


def sample_process(pid: int, at_s: float) -> ProcSample:
    """Read /proc/<pid>: CPU time and RSS (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may contain spaces: fields start after the closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss_pages = int(fields[21])
    return ProcSample(cpu_s=cpu, rss_bytes=rss_pages * os.sysconf("SC_PAGE_SIZE"), at_s=at_s)


def cpu_percent(before: ProcSample, after: ProcSample) -> float:
    """Average CPU use between two samples, in percent of one core."""
    wall = after.at_s - before.at_s
    return round(100.0 * (after.cpu_s - before.cpu_s) / wall, 1) if wall > 0 else 0.0


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0
