"""The queue's key partitioner (Kafka's murmur2, shared by both adapters) and the kafka:// URL."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from flare_im.backends.queue.base import key_partition, murmur2
from flare_im.backends.queue.kafka import KafkaConfig, kafka_config_from_url


def test_murmur2_matches_kafkas_reference_values() -> None:
    # Values of org.apache.kafka.common.utils.Utils.murmur2 (signed ints there), from Kafka's UtilsTest.
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-longer-string") == -1486304829 & 0xFFFFFFFF
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971 & 0xFFFFFFFF
    assert murmur2(b"abc") == 479470107


def test_key_partition_agrees_with_aiokafkas_default_partitioner() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(rng.randrange(0, 40)) for _ in range(2000)] + ["d:ü:ß".encode(), b""]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(key)
        for partitions in (1, 3, 8, 64):
            assert key_partition(key, partitions) == DefaultPartitioner()(key, list(range(partitions)), [])


def test_key_partition_spreads_conversations() -> None:
    counts = [0] * 16
    for i in range(16_000):
        counts[key_partition(f"g:{i}".encode(), 16)] += 1
    assert min(counts) > 800  # 1000 each on average


def test_kafka_url() -> None:
    assert kafka_config_from_url("kafka://127.0.0.1:19092") == KafkaConfig(bootstrap_servers="127.0.0.1:19092")
    config = kafka_config_from_url("kafka://k1:9092,k2:9093/?linger_ms=0&session_timeout_ms=6000&client_id=n1")
    assert config.bootstrap_servers == "k1:9092,k2:9093"
    assert (config.linger_ms, config.session_timeout_ms, config.client_id) == (0, 6000, "n1")
    assert kafka_config_from_url("kafka://k:1?close_timeout_s=2.5").close_timeout_s == 2.5
    for bad in ("redis://k:9092", "kafka://", "kafka://k1", "kafka://k1:9092,k2", "kafka://k:1?nope=1"):
        with pytest.raises(ValueError, match="kafka"):
            kafka_config_from_url(bad)
