"""`flare worker store` serves /metrics, /healthz and /readyz on --metrics-port: its counters follow the events
it writes (real Kafka, ClickHouse and Redis), its readiness checks the backends it uses, and its log is JSON."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.services import require

from flare_im.backends.message_log.queued import LogRecord, encode_record
from flare_im.backends.queue.kafka import KafkaProducer, kafka_config_from_url
from flare_im.devcluster import free_port, wait_for_line
from flare_im.protocol.frames import Message

from .conftest import Harness, ServerProcess, server_log_problems
from .engines import clickhouse, create_database, drop_database, forget_redis_keys, kafka_names

EVENTS = 20


def _start_worker(env: dict[str, str], port: int, log_path: Path, role: str = "store") -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flare_im.cli", "worker", role, "--metrics-port", str(port)],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
        )


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


async def test_store_worker_metrics_health_and_readiness(tmp_path: Path) -> None:
    redis_url, kafka_url, clickhouse_url = require("redis"), require("kafka"), require("clickhouse")
    run = uuid.uuid4().hex[:10]
    ch_db = f"flare_worker_metrics_{run}"
    ch_host = clickhouse_url.split("://", 1)[1].split("/", 1)[0]
    clickhouse(clickhouse_url, f"CREATE DATABASE {ch_db}")
    topic, group, port = f"flare.messages.{run}", f"flare-store-{run}", free_port()
    queue_url = f"{kafka_url}?session_timeout_ms=6000&heartbeat_interval_ms=500"
    env = {
        **os.environ,
        "FLARE_MESSAGE_STORE_URL": f"clickhouse://{ch_host}/{ch_db}",
        "FLARE_CACHE_URL": redis_url,
        "FLARE_QUEUE_URL": queue_url,
        "FLARE_MESSAGES_TOPIC": topic,
        "FLARE_MESSAGES_PARTITIONS": "3",
        "FLARE_STORE_GROUP": group,
        "FLARE_LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "worker.log"
    proc = _start_worker(env, port, log_path)
    try:
        ready = wait_for_line(proc, b"flare worker ready store", 40)
        assert ready is not None, log_path.read_text()
        assert ready.rstrip().endswith(f"metrics={port}".encode())
        producer = KafkaProducer(kafka_config_from_url(kafka_url))
        await producer.start()
        try:
            for seq in range(1, EVENTS + 1):
                conv = f"d:a{seq % 4}:b"
                message = Message(conv, seq, str(1000 + seq), "a", f"c{seq}", "text", {"text": "x"}, 1_700_000_000_000)
                await producer.publish(topic, conv, encode_record(LogRecord(message, seq)))
        finally:
            await producer.close()
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(timeout=10) as http:
            deadline = time.monotonic() + 60
            text = ""
            while time.monotonic() < deadline:
                text = (await http.get(f"{base}/metrics")).text
                if _samples(text, "flare_store_events_total") == [({}, EVENTS)]:
                    break
                await asyncio.sleep(0.2)
            assert _samples(text, "flare_store_events_total") == [({}, EVENTS)], text[-2000:]
            assert _samples(text, "flare_store_batch_size_sum") == [({}, EVENTS)]
            assert _samples(text, "flare_store_write_failures_total") == [({}, 0)]
            lag = _samples(text, "flare_kafka_consumer_lag")
            assert {labels["partition"] for labels, _ in lag} == {"0", "1", "2"}
            assert all(labels["group"] == group and labels["topic"] == topic and n == 0 for labels, n in lag), lag
            assert _samples(text, "flare_build_info")[0][0]["role"] == "worker:store"
            health = await http.get(f"{base}/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            readiness = await http.get(f"{base}/readyz")
            assert readiness.status_code == 200, readiness.text
            assert readiness.json()["checks"] == {"clickhouse": "ok", "redis": "ok", "kafka": "ok"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        clickhouse(clickhouse_url, f"DROP DATABASE IF EXISTS {ch_db}")
    text = log_path.read_text()
    assert not server_log_problems(text), text
    for line in text.splitlines():
        json.loads(line)


async def test_a_cluster_node_exports_its_redis_and_kafka_metrics(tmp_path: Path) -> None:
    """A `flare serve` node on Redis, Kafka and ClickHouse: produce latency, pipeline sizes, readiness."""
    redis_url, kafka_url, clickhouse_url = require("redis"), require("kafka"), require("clickhouse")
    run = uuid.uuid4().hex[:10]
    ch_db = f"flare_node_metrics_{run}"
    ch_host = clickhouse_url.split("://", 1)[1].split("/", 1)[0]
    clickhouse(clickhouse_url, f"CREATE DATABASE {ch_db}")
    prefix = f"flare-{run}:"
    srv = ServerProcess(
        tmp_path / "node",
        env_overrides={
            "FLARE_MESSAGE_STORE_URL": f"clickhouse://{ch_host}/{ch_db}",
            "FLARE_CACHE_URL": redis_url,
            "FLARE_CACHE_PREFIX": prefix,
            "FLARE_QUEUE_URL": kafka_url,
            **kafka_names(run),
            "FLARE_MESSAGES_PARTITIONS": "2",
            "FLARE_PUSH_PARTITIONS": "2",
        },
    )
    try:
        srv.start()
        harness = Harness(srv)
        try:
            await harness.user("alice")
            await harness.user("bob")
            alice = await harness.device("alice")
            bob = await harness.device("bob")
            for i in range(6):
                await alice.send("d:alice:bob", f"m{i}")
            for _ in range(6):
                await bob.next_message()
            async with httpx.AsyncClient(timeout=10) as http:
                text = (await http.get(f"{srv.api_url}/metrics")).text
                readiness = await http.get(f"{srv.api_url}/readyz")
        finally:
            await harness.close()
        # Every acknowledged send was produced to the messages topic (acks=all) before its ack.
        ((_, produced),) = _samples(text, "flare_kafka_produce_seconds_count")
        assert produced >= 6
        pipelines = {labels["client"]: n for labels, n in _samples(text, "flare_redis_pipeline_size_sum")}
        assert pipelines["sequencer"] >= 6  # one INCR per send, however they were grouped
        assert pipelines["idempotency"] >= 6  # a claim per send
        assert _samples(text, "flare_send_stage_seconds_count")
        assert _samples(text, "flare_sqlite_batch_size_count")
        assert readiness.status_code == 200, readiness.text
        checks = readiness.json()["checks"]
        assert (checks["redis"], checks["kafka"], checks["clickhouse"]) == ("ok", "ok", "ok")
    finally:
        if srv.proc is not None:
            srv.stop()
        await forget_redis_keys(redis_url, prefix)
        clickhouse(clickhouse_url, f"DROP DATABASE IF EXISTS {ch_db}")


async def test_push_worker_metrics_health_and_readiness(tmp_path: Path) -> None:
    """`flare worker push` answers the same three paths; its readiness includes PostgreSQL."""
    redis_url, kafka_url = require("redis"), require("kafka")
    clickhouse_url, postgres_url = require("clickhouse"), require("postgres")
    run = uuid.uuid4().hex[:10]
    name = f"flare_push_metrics_{run}"
    database_url = await create_database(postgres_url, name)
    clickhouse(clickhouse_url, f"CREATE DATABASE {name}")
    ch_host = clickhouse_url.split("://", 1)[1].split("/", 1)[0]
    port = free_port()
    env = {
        **os.environ,
        "FLARE_DATABASE_URL": database_url,
        "FLARE_MESSAGE_STORE_URL": f"clickhouse://{ch_host}/{name}",
        "FLARE_CACHE_URL": redis_url,
        "FLARE_QUEUE_URL": f"{kafka_url}?session_timeout_ms=6000&heartbeat_interval_ms=500",
        "FLARE_PUSH_TOPIC": f"flare.push.{run}",
        "FLARE_PUSH_PARTITIONS": "2",
        "FLARE_PUSH_GROUP": f"flare-push-{run}",
        "FLARE_LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "push.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        migrated = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "flare_im.cli", "migrate"], env=env, capture_output=True
        )
        assert migrated.returncode == 0, migrated.stderr
        proc = _start_worker(env, port, log_path, "push")
        ready = await asyncio.to_thread(wait_for_line, proc, b"flare worker ready push", 40)
        assert ready is not None, log_path.read_text()
        async with httpx.AsyncClient(timeout=10) as http:
            base = f"http://127.0.0.1:{port}"
            assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
            readiness = await http.get(f"{base}/readyz")
            assert readiness.status_code == 200, readiness.text
            assert readiness.json()["checks"] == {"postgresql": "ok", "clickhouse": "ok", "redis": "ok", "kafka": "ok"}
            text = (await http.get(f"{base}/metrics")).text
        assert _samples(text, "flare_build_info")[0][0]["role"] == "worker:push"
        assert _samples(text, "flare_push_batches_total")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        await drop_database(postgres_url, name)
        clickhouse(clickhouse_url, f"DROP DATABASE IF EXISTS {name}")
    text = log_path.read_text()
    assert not server_log_problems(text), text
    for line in text.splitlines():
        json.loads(line)
