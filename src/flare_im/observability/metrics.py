"""Prometheus metrics: one collector reads the plain counters of a process's objects at scrape time.

The objects count for themselves (observability/stats.py: an int or a list slot per event, no locks, no
prometheus_client call on the hot path); ``FlareCollector`` turns what it is given into metric families
whenever ``/metrics`` is read. What each series means and what to alert on: docs/operations.md.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from flare_im import __version__
from flare_im.observability.stats import Counts, Histogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "flare_"


class RuntimeStats:
    """Event-loop lag (how late a timer fires) and garbage-collector pauses of this process.

    A task wakes every ``interval_s`` and records how much later than asked it ran: a loop blocked by a
    long callback, or starved of CPU, shows here first. GC pauses are timed with ``gc.callbacks``.
    """

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.loop_lag = Histogram()
        self.gc_pauses = {generation: Histogram() for generation in range(3)}
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.ensure_future(self._watch())

    async def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval_s)
            self.loop_lag.observe(max(0.0, loop.time() - asked - self.interval_s))

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses[info.get("generation", 2)].observe(time.perf_counter() - self._gc_started)


Source = Callable[[], Iterable[Metric]]


class FlareCollector:
    """Reads every source at scrape time. A source is a function returning metric families."""

    def __init__(self, role: str, sources: Iterable[Source] = ()) -> None:
        self.role = role
        self.sources: list[Source] = list(sources)

    def add(self, source: Source) -> None:
        self.sources.append(source)

    def collect(self) -> Iterator[Metric]:
        info = InfoMetricFamily(PREFIX + "build", "Flare's version and this process's role")
        info.add_metric([], {"version": __version__, "role": self.role})
        yield info
        for source in self.sources:
            yield from source()


def new_registry(collector: FlareCollector) -> CollectorRegistry:
    """A registry of our own (not prometheus_client's global one): Flare's series and the process's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, fds
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


# ---------------------------------------------------------------------------------------------- families


def histogram(name: str, doc: str, labels: dict[str, str] | None = None) -> Callable[[Histogram], Metric]:
    """A function that turns one Histogram into a family (for single-series histograms)."""

    def family(h: Histogram) -> Metric:
        m = HistogramMetricFamily(PREFIX + name, doc, labels=list(labels or {}))
        m.add_metric(list((labels or {}).values()), h.cumulative(), h.sum)
        return m

    return family


def histograms(name: str, doc: str, label: str, series: Iterable[tuple[str, Histogram]]) -> Metric:
    m = HistogramMetricFamily(PREFIX + name, doc, labels=[label])
    for value, h in series:
        m.add_metric([value], h.cumulative(), h.sum)
    return m


def counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def counters(name: str, doc: str, labels: list[str], counts: Counts, key: Callable[[Hashable], list[str]]) -> Metric:
    m = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for k, n in counts.snapshot():
        m.add_metric(key(k), n)
    return m


def gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def frame_type(cls: Hashable) -> list[str]:
    """A frame class's wire ``type`` (its msgspec tag), e.g. ``send``."""
    config = getattr(cls, "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return [str(tag) if tag is not None else getattr(cls, "__name__", str(cls)).lower()]


def runtime_families(runtime: RuntimeStats) -> Source:
    def source() -> Iterator[Metric]:
        yield histogram("event_loop_lag_seconds", "How late the event loop ran a timer (blocked or starved)")(
            runtime.loop_lag
        )
        yield histograms(
            "gc_pause_seconds",
            "Garbage-collector pauses by generation",
            "generation",
            ((str(g), h) for g, h in runtime.gc_pauses.items()),
        )

    return source
