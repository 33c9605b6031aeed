"""What /metrics adds to one 1:1 message on the send path, timed directly (issue 16).

The same updates the gateway, router, hub and SQLite writer make per message (observability/stats.py),
on the real classes, in a tight loop: the frame counted in, the decode time, the ack counted out and its
arrival-to-ack time, the recipient's push counted, one send in SendStages.SAMPLE_EVERY timed by stage,
and the writer's commit time and batch size once per batch. An A/B of `flare bench p2p` cannot resolve
a few per cent on a shared VM (runs of one side spread by ±10 %); this can, to a few nanoseconds.

    python bench/metrics_cost.py [messages] [batch]
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

from flare_im.observability.stats import SIZE_BUCKETS, GatewayStats, Histogram, SendStages
from flare_im.protocol.frames import Ack, Msg, Send


def with_metrics(n: int, batch: int) -> float:
    stats, stages = GatewayStats(), SendStages()
    delivered = stats.frames_out
    commits, sizes = Histogram(), Histogram(SIZE_BUCKETS)
    clock = time.perf_counter
    router = SimpleNamespace(sends=0)  # MessageRouter._sends, an attribute
    started = clock()
    for i in range(n):
        received = clock()
        stats.frames_in[Send] += 1
        stages.decode.observe(clock() - received)
        router.sends += 1
        if router.sends % SendStages.SAMPLE_EVERY == 1:
            t0 = clock()
            t1 = clock()
            stages.route.observe(t1 - t0)
            t2 = clock()
            stages.durable.observe(t2 - t1)
            stages.fanout.observe(clock() - t2)
        delivered[Msg] += 1
        stats.frames_out[Ack] += 1
        stages.ack.observe(clock() - received)
        if i % batch == 0:
            committing = clock()
            commits.observe(clock() - committing)
            sizes.observe(batch)
    return clock() - started


def without(n: int, batch: int) -> float:
    clock = time.perf_counter
    started = clock()
    for i in range(n):
        if i % batch == 0:
            pass
    return clock() - started


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    runs = [(with_metrics(n, batch) - without(n, batch)) / n * 1e6 for _ in range(7)]
    runs.sort()
    spread = f"min {runs[0]:.2f} µs, max {runs[-1]:.2f} µs"
    print(f"metrics per message: median {runs[3]:.2f} µs, {spread} ({n} messages, 7 runs)")


if __name__ == "__main__":
    main()
