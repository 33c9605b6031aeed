"""Publish and consume throughput of the Kafka queue adapter (acks=all), with the in-process twin for scale.

Run: .venv/bin/python bench/kafka_publish.py [--publishers 200] [--seconds 5] [--partitions 16]
     [--size 300] [--linger-ms 0] [--url kafka://127.0.0.1:19092] [--memory]
Each publisher is one sender in its own conversation (key ``g:<n>``) that awaits each ack before the next
publish, as the router awaits the durable append before it acks the sender; ``publishers`` records are
in flight at any time. The run stops publishing after ``seconds``, then one consumer (a new group) reads
every record in batches of 1000, committing each, and must find them all. The topic is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
import uuid

import uvloop

from flare_im.backends.queue.base import Consumer, Producer, QueueAdmin
from flare_im.backends.queue.kafka import KafkaConsumer, KafkaProducer, KafkaQueueAdmin, kafka_config_from_url
from flare_im.backends.queue.memory import MemoryConsumer, MemoryProducer, MemoryQueueAdmin, MemoryQueueBroker

MAX_CONSUME_S = 120.0


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else 0.0


async def publish_for(producer: Producer, topic: str, publishers: int, seconds: float, size: int) -> list[float]:
    """Publishes until ``seconds`` have passed; returns each ack's latency in seconds."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    payload = b"x" * size

    async def publisher(k: int) -> None:
        key = f"g:{k}"
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await producer.publish(topic, key, payload)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(publisher(k) for k in range(publishers)))
    return latencies


async def consume_all(consumer: Consumer, expected: int) -> int:
    got = 0
    async with asyncio.timeout(MAX_CONSUME_S):
        async for batch in consumer.batches(1000, 0.2):
            got += len(batch)
            await batch.commit()
            if got >= expected:
                break
    return got


async def main(args: argparse.Namespace) -> None:
    admin: QueueAdmin
    producer: Producer
    if args.memory:
        broker = MemoryQueueBroker()
        admin, producer = MemoryQueueAdmin(broker), MemoryProducer(broker)
        label = "memory"
    else:
        options = {"linger_ms": args.linger_ms, "session_timeout_ms": 1000, "heartbeat_interval_ms": 100}
        config = dataclasses.replace(kafka_config_from_url(args.url), **options)
        admin, producer = KafkaQueueAdmin(config), KafkaProducer(config)
        label = f"kafka {config.bootstrap_servers} linger_ms={config.linger_ms}"
    topic = f"flare-bench-{uuid.uuid4().hex[:12]}"
    await admin.start()
    await producer.start()
    try:
        await admin.ensure_topic(topic, args.partitions)
        started = time.perf_counter()
        latencies = await publish_for(producer, topic, args.publishers, args.seconds, args.size)
        elapsed = time.perf_counter() - started
        latencies.sort()
        stored = sum((await producer.end_offsets(topic)).values())
        print(
            f"{label}: {args.publishers} publishers, {args.partitions} partitions, {args.size} B records: "
            f"{len(latencies):,} acked in {elapsed:.2f}s = {len(latencies) / elapsed:,.0f}/s; ack latency "
            f"p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, p99 {percentile(latencies, 0.99) * 1e3:.1f} ms, "
            f"max {latencies[-1] * 1e3:.1f} ms; end offsets sum {stored:,}"
        )

        group = f"flare-bench-{uuid.uuid4().hex[:12]}"
        consumer: Consumer = (
            MemoryConsumer(broker, [topic], group) if args.memory else KafkaConsumer(config, [topic], group)
        )
        await consumer.start()
        try:
            started = time.perf_counter()
            got = await consume_all(consumer, stored)
            elapsed = time.perf_counter() - started
        finally:
            await consumer.close()
        print(
            f"{label}: consumed {got:,} of {stored:,} in batches of 1000 with a commit each: "
            f"{elapsed:.2f}s (group join included) = {got / elapsed:,.0f}/s"
        )
    finally:
        await producer.close()
        if isinstance(admin, KafkaQueueAdmin):
            await admin.delete_topics([topic])
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publishers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--size", type=int, default=300, help="bytes per record")
    parser.add_argument("--linger-ms", type=int, default=0)
    parser.add_argument("--url", default="kafka://127.0.0.1:19092")
    parser.add_argument("--memory", action="store_true", help="the in-process twin instead of Kafka")
    uvloop.run(main(parser.parse_args()))
