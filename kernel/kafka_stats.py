"""librdkafka's statistics as Prometheus gauges: broker round trips, the producer's queue, the consumer's.

A client configured with ``KafkaStats.config(name, interval)`` emits its statistics every
``statistics.interval.ms`` (``MERLIN_KAFKA_STATISTICS_INTERVAL_MS``, 0 = none) to
``stats_cb``, which librdkafka's Python client calls on whichever thread polls
that client: the producer's poll thread, the consumer's own thread, never the
event loop. The JSON is tens of kilobytes for a consumer of a few partitions:
it is parsed with orjson and only a few fields are read.

- ``merlin_kafka_broker_rtt_seconds{client,broker,stat}``: the average and the
  99th percentile (``stat`` ``avg``/``p99``) of the request round trips to each
  broker over the last interval; left as it was when the interval saw no request.
- ``merlin_kafka_producer_queue_messages{client}``: messages in the producer's
  queues, waiting to be sent or acknowledged (``msg_cnt``).
- ``merlin_kafka_consumer_fetch_queue_messages{client}``: records fetched ahead
  and not yet consumed, summed over the assigned partitions (``fetchq_cnt``).

``client`` is the name merlin gives the client (``producer``,
``consumer:projection``, ...): a client restarted under the same name takes
its series over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog
from prometheus_client import CollectorRegistry, Gauge

from kernel.settings import ClientConfig

log = structlog.get_logger()

_MICROSECONDS = 1e-6


class KafkaStats:
    """The gauges of one service's Kafka clients, and the configuration that feeds them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rtt = Gauge(
            "merlin_kafka_broker_rtt_seconds",
            "Round trip of requests to a broker over the last statistics interval (librdkafka rtt)",
            ["client", "broker", "stat"], registry=registry, multiprocess_mode="liveall",
        )  # fmt: skip
        self.producer_queue = Gauge(
            "merlin_kafka_producer_queue_messages",
            "Messages in a producer's queues, not yet acknowledged (librdkafka msg_cnt)",
            ["client"], registry=registry, multiprocess_mode="liveall",
        )  # fmt: skip
        self.fetch_queue = Gauge(
            "merlin_kafka_consumer_fetch_queue_messages",
            "Records a consumer fetched ahead and has not handed over yet (librdkafka fetchq_cnt, summed)",
            ["client"], registry=registry, multiprocess_mode="liveall",
        )  # fmt: skip

    def config(self, client: str, interval_ms: int) -> ClientConfig:
        """What to add to the configuration of the client called ``client`` for statistics every
        ``interval_ms``: nothing when that is 0."""
        if interval_ms <= 0:
            return {}
        return {"statistics.interval.ms": interval_ms, "stats_cb": self.callback(client)}  # type: ignore[dict-item]

    def callback(self, client: str) -> Callable[[str], None]:
        """librdkafka's ``stats_cb`` for ``client``: runs on the client's polling thread."""

        def received(stats: str) -> None:
            try:
                self.record(client, orjson.loads(stats))
            except Exception as exc:  # a callback must not raise into librdkafka's poll
                log.warning("kafka_stats_unreadable", client=client, error=repr(exc))

        return received

    def record(self, client: str, stats: Mapping[str, Any]) -> None:
        """Set the gauges of ``client`` from one statistics object."""
        for broker in stats.get("brokers", {}).values():
            if broker.get("nodeid", -1) < 0:  # the bootstrap address, or a logical broker (GroupCoordinator)
                continue
            rtt = broker.get("rtt") or {}
            if rtt.get("cnt", 0) > 0:  # no request in the window: the last values stand
                name = str(broker.get("nodename") or broker.get("name"))
                self.rtt.labels(client, name, "avg").set(rtt["avg"] * _MICROSECONDS)
                self.rtt.labels(client, name, "p99").set(rtt["p99"] * _MICROSECONDS)
        kind = stats.get("type")
        if kind == "producer":
            self.producer_queue.labels(client).set(stats.get("msg_cnt", 0))
        elif kind == "consumer":
            fetched = sum(
                partition.get("fetchq_cnt", 0)
                for topic in stats.get("topics", {}).values()
                for partition in topic.get("partitions", {}).values()
            )
            self.fetch_queue.labels(client).set(fetched)


def without_stats(config: ClientConfig) -> ClientConfig:
    """``config`` less its statistics: for a short-lived client made from a long-lived one's settings."""
    return {k: v for k, v in config.items() if k not in ("statistics.interval.ms", "stats_cb")}
