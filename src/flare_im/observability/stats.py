"""Plain counters and bucketed histograms that hot code updates, read by the Prometheus collector at scrape time.

Calling prometheus_client's ``inc()``/``observe()`` per frame takes a lock and several attribute lookups; these
are a dict or list update in the owner's object, a few tens of nanoseconds. Nothing here is thread-safe beyond
what the GIL gives one ``+=`` (updates come from the event loop, or from one writer thread per object), and a
scrape may see one counter a step ahead of another: Prometheus tolerates that.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Hashable, Iterator

# Seconds: from a fraction of a millisecond (in-memory steps) to seconds (an fsync on a loaded disk).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Items per batch (SQLite transactions, Redis pipelines, worker batches).
SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class Histogram:
    """Counts per bucket (upper bounds, ``le``), the sum and the count; Prometheus' cumulative form at read."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, cumulative count), ...]`` ending with ``+Inf``, as prometheus_client's families take them."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*map(_le, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, float(total)))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


class Counts(defaultdict[Hashable, int]):
    """Counters by label value (frame type, error code, outcome): one dict entry per value seen. Hot code
    writes ``counts[key] += 1`` (one C-level update); ``add`` is the same for the rest."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(int)

    def add(self, key: Hashable, n: int = 1) -> None:
        self[key] += n

    def snapshot(self) -> list[tuple[Hashable, int]]:
        return list(self.items())


class SendStages:
    """Where a send's time goes (DESIGN.md §3): each stage's own duration, and the whole of it.

    decode: bytes to frame (WebSocket); route: authorise, deduplicate, filter; durable: seq, append and the
    commit (one node) or the queue's acknowledgement (several); fanout: handing the frame to local connections
    and the node bus; ack: from the frame's arrival to its ack being queued (WebSocket sends only).
    decode and ack count every send; route, durable and fanout one in ``SAMPLE_EVERY`` (the first, the fifth,
    ...): four clock reads and three observations per send are a measurable share of its cost, and a sample
    shows where the time goes as well.
    """

    SAMPLE_EVERY = 4

    __slots__ = ("ack", "decode", "durable", "fanout", "route")

    def __init__(self) -> None:
        self.decode = Histogram()
        self.route = Histogram()
        self.durable = Histogram()
        self.fanout = Histogram()
        self.ack = Histogram()

    def stages(self) -> Iterator[tuple[str, Histogram]]:
        yield from (
            ("decode", self.decode),
            ("route", self.route),
            ("durable", self.durable),
            ("fanout", self.fanout),
            ("ack", self.ack),
        )


class GatewayStats:
    """The message gateway's counters (gateway/connection.py updates them; one object per node)."""

    __slots__ = (
        "auth",
        "bulk_dropped",
        "bulk_held",
        "closes",
        "connections_closed",
        "connections_opened",
        "errors",
        "frames_in",
        "frames_out",
    )

    def __init__(self) -> None:
        self.connections_opened = 0
        self.connections_closed = 0
        self.auth = Counts()  # "ok" / "failed"
        self.frames_in = Counts()  # by frame class
        self.frames_out = Counts()  # replies by frame class (fan-out: the hub's deliveries)
        self.errors = Counts()  # error replies by code
        self.closes = Counts()  # closes the server started, by close code
        self.bulk_held = 0  # bulk frames a connection held back while its client was not reading
        self.bulk_dropped = 0  # held bulk frames dropped past the bound (the devices pull them by seq)
