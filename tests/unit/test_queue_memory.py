"""What only the in-process queue has: its retention bound."""

from __future__ import annotations

import asyncio

from flare_im.backends.queue.memory import (
    MemoryConsumer,
    MemoryProducer,
    MemoryQueueAdmin,
    MemoryQueueBroker,
    MemoryQueueConfig,
)


async def test_a_partition_keeps_its_newest_records_and_counts_what_a_group_never_saw() -> None:
    broker = MemoryQueueBroker(MemoryQueueConfig(max_records_per_partition=80))
    await MemoryQueueAdmin(broker).ensure_topic("t", 1)
    producer = MemoryProducer(broker)
    await asyncio.gather(*(producer.publish("t", "k", str(n).encode()) for n in range(200)))
    assert await producer.end_offsets("t") == {0: 200}
    kept = broker.topics["t"][0]
    assert 80 <= len(kept.records) <= 90  # trimmed in chunks of an eighth
    assert kept.start + len(kept.records) == 200

    consumer = MemoryConsumer(broker, ["t"], "g")
    await consumer.start()
    batches = consumer.batches(1000, 0.01)
    batch = await anext(batches)
    await batches.aclose()
    assert [r.offset for r in batch.records] == list(range(kept.start, 200))
    assert [r.value for r in batch.records] == [str(n).encode() for n in range(kept.start, 200)]
    assert broker.skipped == kept.start
    await consumer.close()
