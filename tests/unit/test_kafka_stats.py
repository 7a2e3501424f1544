"""librdkafka's statistics, as real clients emit them (trimmed samples), become merlin's Kafka gauges."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from kernel.kafka_stats import KafkaStats, without_stats

# Emitted by confluent-kafka 2.16 (librdkafka 2.16) against the local broker: a producer with 302
# messages in flight, a consumer with 2,008 records fetched ahead on each of two partitions.
SAMPLES: dict[str, dict[str, Any]] = orjson.loads(
    (Path(__file__).parent / "data" / "librdkafka_stats.json").read_bytes()
)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_producer_reports_its_queue_and_its_round_trips() -> None:
    registry = CollectorRegistry()
    stats = KafkaStats(registry)
    stats.callback("producer")(orjson.dumps(SAMPLES["producer"]).decode())
    assert _value(registry, "merlin_kafka_producer_queue_messages", client="producer") == 302
    rtt = {"client": "producer", "broker": "127.0.0.1:9092"}
    assert _value(registry, "merlin_kafka_broker_rtt_seconds", **rtt, stat="avg") == 1359e-6
    assert _value(registry, "merlin_kafka_broker_rtt_seconds", **rtt, stat="p99") == 1415e-6
    assert _value(registry, "merlin_kafka_consumer_fetch_queue_messages", client="producer") is None


def test_a_consumer_reports_what_it_fetched_ahead_over_its_partitions() -> None:
    registry = CollectorRegistry()
    stats = KafkaStats(registry)
    stats.callback("consumer:projection")(orjson.dumps(SAMPLES["consumer"]).decode())
    fetched = _value(registry, "merlin_kafka_consumer_fetch_queue_messages", client="consumer:projection")
    assert fetched == 4016
    assert _value(registry, "merlin_kafka_producer_queue_messages", client="consumer:projection") is None
    rtt = {"client": "consumer:projection", "broker": "127.0.0.1:9092", "stat": "avg"}
    assert _value(registry, "merlin_kafka_broker_rtt_seconds", **rtt) == 500555e-6


def test_logical_and_bootstrap_brokers_are_left_out() -> None:
    registry = CollectorRegistry()
    KafkaStats(registry).record("consumer:x", SAMPLES["consumer"])
    brokers = {
        sample.labels["broker"]
        for family in registry.collect()
        for sample in family.samples
        if family.name == "merlin_kafka_broker_rtt_seconds"
    }
    assert brokers == {"127.0.0.1:9092"}  # the GroupCoordinator (node -1) is not a broker of its own


def test_an_interval_without_requests_keeps_the_last_round_trip() -> None:
    registry = CollectorRegistry()
    stats = KafkaStats(registry)
    stats.record("producer", SAMPLES["producer"])
    quiet = copy.deepcopy(SAMPLES["producer"])
    for broker in quiet["brokers"].values():
        broker["rtt"] = dict.fromkeys(broker["rtt"], 0)
    quiet["msg_cnt"] = 0
    stats.record("producer", quiet)
    labels = {"client": "producer", "broker": "127.0.0.1:9092", "stat": "avg"}
    assert _value(registry, "merlin_kafka_broker_rtt_seconds", **labels) == 1359e-6
    assert _value(registry, "merlin_kafka_producer_queue_messages", client="producer") == 0


def test_statistics_that_do_not_parse_never_raise_into_librdkafka() -> None:
    stats = KafkaStats(CollectorRegistry())
    stats.callback("producer")("{not json")
    stats.callback("producer")('{"type": "producer", "brokers": []}')


def test_statistics_are_asked_for_only_with_an_interval() -> None:
    stats = KafkaStats(CollectorRegistry())
    assert stats.config("producer", 0) == {}
    config = stats.config("producer", 15_000)
    assert config["statistics.interval.ms"] == 15_000
    assert callable(config["stats_cb"])
    assert without_stats({"bootstrap.servers": "b", **config}) == {"bootstrap.servers": "b"}
