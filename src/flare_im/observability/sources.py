"""What each role exports: metric families built from the objects the composition root made.

One function per kind of object; app.py, distributed.py and notify_node.py pass their objects in. Names and
meanings are listed in docs/operations.md ("Metrics").
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from flare_im.observability.metrics import (
    PREFIX,
    Source,
    counter,
    counters,
    frame_type,
    gauge,
    histogram,
    histograms,
)
from flare_im.observability.stats import GatewayStats, SendStages
from flare_im.protocol.errors import CloseCode


def _close_reason(code: Hashable) -> list[str]:
    try:
        name = CloseCode(int(code)).name.lower()  # type: ignore[call-overload]
    except ValueError:
        name = "other"
    return [str(code), name]


def gateway_source(stats: GatewayStats, connected: Callable[[], int], delivered: Any) -> Source:
    """The message gateway: connections, authentications, frames, errors, closes, deliveries."""

    def source() -> Iterator[Metric]:
        yield gauge("ws_connections", "Open WebSocket connections", stats.connections_opened - stats.connections_closed)
        yield counter("ws_connections_opened", "WebSocket connections accepted", stats.connections_opened)
        yield gauge("ws_authenticated_connections", "Authenticated connections in this node's hub", connected())
        yield counters("ws_auth", "Authentications by result (ok, failed)", ["result"], stats.auth, lambda k: [str(k)])
        yield counters("ws_frames_in", "Frames decoded, by type", ["type"], stats.frames_in, frame_type)
        out = CounterMetricFamily(PREFIX + "ws_frames_out", "Frames sent (replies, fan-out), by type", labels=["type"])
        totals: dict[str, int] = {}
        for cls, n in (*stats.frames_out.snapshot(), *delivered.snapshot()):
            (name,) = frame_type(cls)
            totals[name] = totals.get(name, 0) + n
        for name, n in totals.items():
            out.add_metric([name], n)
        yield out
        yield counters(
            "ws_deliveries", "Frames fanned out to local connections, by type", ["type"], delivered, frame_type
        )
        yield counters("ws_errors", "Error replies, by error code", ["code"], stats.errors, lambda k: [str(k)])
        yield counter(
            "ws_bulk_held", "Bulk frames (broadcast notices) held back for connections not reading", stats.bulk_held
        )
        yield counter("ws_bulk_dropped", "Held bulk frames dropped past the bound (pulled by seq)", stats.bulk_dropped)
        yield counters(
            "ws_closes",
            "Connections the server closed, by close code (slow_consumer, rate_limited, auth_failed, ...)",
            ["code", "reason"],
            stats.closes,
            _close_reason,
        )

    return source


def send_source(stages: SendStages) -> Source:
    def source() -> Iterator[Metric]:
        yield histograms(
            "send_stage_seconds",
            "Time of each stage of a send: decode, route, durable, fanout; ack is arrival to ack",
            "stage",
            stages.stages(),
        )

    return source


def sqlite_source(databases: Sequence[Any]) -> Source:
    """SqliteDatabase objects: group-commit transactions."""

    def source() -> Iterator[Metric]:
        commits = HistogramMetricFamily(PREFIX + "sqlite_commit_seconds", "Time of one COMMIT (fsync)", labels=["db"])
        sizes = HistogramMetricFamily(PREFIX + "sqlite_batch_size", "Operations per transaction", labels=["db"])
        waits = HistogramMetricFamily(
            PREFIX + "sqlite_queue_seconds", "Wait of a transaction's oldest operation for the writer", labels=["db"]
        )
        transactions = HistogramMetricFamily(
            PREFIX + "sqlite_transaction_seconds", "One transaction on the writer, BEGIN to COMMIT done", labels=["db"]
        )
        checkpoints = HistogramMetricFamily(
            PREFIX + "sqlite_checkpoint_seconds", "One pass of the checkpoint thread (commits go on)", labels=["db"]
        )
        resets = HistogramMetricFamily(
            PREFIX + "sqlite_wal_reset_seconds", "Copy-back before a WAL reset (commits wait)", labels=["db"]
        )
        for db in databases:
            name = str(db.config.path).rsplit("/", 1)[-1]
            commits.add_metric([name], db.commit_seconds.cumulative(), db.commit_seconds.sum)
            sizes.add_metric([name], db.batch_sizes.cumulative(), db.batch_sizes.sum)
            waits.add_metric([name], db.queue_seconds.cumulative(), db.queue_seconds.sum)
            transactions.add_metric([name], db.transaction_seconds.cumulative(), db.transaction_seconds.sum)
            checkpoints.add_metric([name], db.checkpoint_seconds.cumulative(), db.checkpoint_seconds.sum)
            resets.add_metric([name], db.reset_seconds.cumulative(), db.reset_seconds.sum)
        yield commits
        yield sizes
        yield waits
        yield transactions
        yield checkpoints
        yield resets

    return source


def pipeline_source(pipelines: Sequence[tuple[str, Any]]) -> Source:
    """AutoPipeline objects by the client that owns them (sequencer, idempotency, ratelimit)."""

    def source() -> Iterator[Metric]:
        yield histograms(
            "redis_pipeline_size",
            "Redis calls per pipeline sent",
            "client",
            ((name, p.sizes) for name, p in pipelines),
        )

    return source


def producer_source(producer: Any) -> Source:
    def source() -> Iterator[Metric]:
        yield histogram("kafka_produce_seconds", "Publish to the broker's acks=all answer")(producer.produce_seconds)

    return source


def consumer_source(consumer: Any, group: str) -> Source:
    """A KafkaConsumer: lag per assigned partition."""

    def source() -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            PREFIX + "kafka_consumer_lag",
            "Records behind the end of each partition this member reads",
            labels=["group", "topic", "partition"],
        )
        for (topic, partition), n in consumer.lag().items():
            lag.add_metric([group, topic, str(partition)], n)
        yield lag

    return source


def filter_source(content_filter: Any) -> Source:
    def source() -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            PREFIX + "filter_decisions", "Content-filter decisions while rules are enabled", labels=["decision"]
        )
        passed = content_filter.screened - content_filter.masked - content_filter.blocked
        for decision, n in (("passed", passed), ("masked", content_filter.masked), ("blocked", content_filter.blocked)):
            decisions.add_metric([decision], n)
        yield decisions

    return source


def push_source(worker: Any) -> Source:
    """A PushWorker: provider answers."""

    def source() -> Iterator[Metric]:
        yield counters(
            "push_results",
            "Push provider answers by provider and outcome (sent, retry, failed, invalid_token)",
            ["provider", "outcome"],
            worker.results,
            lambda k: [str(part) for part in k],  # type: ignore[attr-defined]
        )
        yield counter("push_batches", "Push event batches handled", worker.batches)

    return source


def store_source(worker: Any) -> Source:
    """A StoreWorker: batches written to the message store."""

    def source() -> Iterator[Metric]:
        yield counter("store_events", "Events written to the message store", worker.written)
        yield counter("store_write_failures", "Batch writes that failed (then retried)", worker.failures)
        yield histogram("store_batch_size", "Events per batch written")(worker.batch_sizes)
        yield histogram("store_write_seconds", "Time to write one batch, retries included")(worker.write_seconds)

    return source


def search_source(index: Any) -> Source:
    """The embedded search index's follower: how far behind the store it is."""

    def source() -> Iterator[Metric]:
        pending, oldest_s = index.lag()
        yield gauge("search_pending", "Events handed to the search follower and not yet indexed", pending)
        yield gauge("search_lag_seconds", "Age of the oldest event not yet indexed (0 when none)", oldest_s)
        yield counter("search_indexed", "Rows indexed, re-indexed or removed by the follower", index.indexed)

    return source


def readiness_source(ready: Callable[[], bool]) -> Source:
    def source() -> Iterator[Metric]:
        yield gauge("ready", "1 while /readyz would answer 200 at the last check (not draining, backends up)", ready())

    return source
