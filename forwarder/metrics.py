"""The forwarder's Prometheus metrics, one registry per worker."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from forwarder.subscription import Heard
from kernel.control import counted_skips
from kernel.kafka_stats import KafkaStats
from kernel.metrics import service_registry


class Pending(Protocol):
    """What an endpoint's flow has taken in and not finished (``forwarder.tracker.OffsetTracker``)."""

    def oldest(self) -> float | None:
        """When the oldest of it was written (Unix time), or None when nothing is pending."""
        ...


class OldestUndelivered(Collector):
    """``merlin_endpoint_oldest_undelivered_age_seconds``, computed when scraped: per endpoint, how
    long ago the oldest event its flow consumed and has not finished (delivered, dead-lettered or
    skipped) was written; 0 when nothing is pending. A blocked room's head is pending, however
    long it waits; while an endpoint is paused, what its last run had taken in still counts."""

    NAME = "merlin_endpoint_oldest_undelivered_age_seconds"
    HELP = "Age (now minus its Kafka timestamp) of the oldest event an endpoint consumed and has not finished"

    def __init__(self, registry: CollectorRegistry) -> None:
        self._flows: dict[str, Pending] = {}
        registry.register(self)

    def watch(self, endpoint: str, pending: Pending) -> None:
        """Follow ``pending``, the books of ``endpoint``'s flow now running (a flow's last run replaces
        the one before)."""
        self._flows[endpoint] = pending

    def forget(self, endpoint: str) -> None:
        """``endpoint`` is gone (deleted, or no longer run here)."""
        self._flows.pop(endpoint, None)

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["endpoint"])]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["endpoint"])
        now = time.time()
        for endpoint, pending in list(self._flows.items()):
            written = pending.oldest()
            family.add_metric([endpoint], 0.0 if written is None else max(0.0, now - written))
        return [family]


class ForwarderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or service_registry()
        self.records = Counter(
            "merlin_forwarder_records", "Records consumed from the events topic", registry=self.registry
        )
        self.outcomes = Counter(
            "merlin_projection_events",
            "Events projected, by outcome",
            ["status"],
            registry=self.registry,
        )
        self.replayed = Counter(
            "merlin_projection_replayed",
            "Records skipped because the store had already applied them",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "merlin_dead_letters", "Records sent to the dead-letter topic", ["stage"], registry=self.registry
        )
        self.batch_seconds = Histogram(
            "merlin_projection_batch_seconds",
            "Time to project one batch (an endpoint's flow: to learn which of its events were applied)",
            ["flow"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.batch_size = Histogram(
            "merlin_projection_batch_records",
            "Records per batch, per flow",
            ["flow"],
            registry=self.registry,
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
        )
        self.rebalances = Counter(
            "merlin_forwarder_rebalances", "Partition assignments and revocations", ["kind"],
            registry=self.registry,
        )  # fmt: skip
        self.flow_restarts = Counter(
            "merlin_forwarder_flow_restarts",
            "Times a flow crashed and was restarted",
            ["flow"],
            registry=self.registry,
        )
        self.stage_restarts = Counter(
            "merlin_forwarder_stage_restarts", "Stages restarted by their supervisor", ["stage"],
            registry=self.registry,
        )  # fmt: skip
        self.paused = Gauge(
            "merlin_forwarder_paused_partitions", "Partitions paused by back-pressure", ["flow"],
            registry=self.registry,
        )  # fmt: skip
        self.deliveries = Counter(
            "merlin_deliveries", "Events finished per endpoint, by outcome", ["endpoint", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.delivery_seconds = Histogram(
            "merlin_delivery_seconds", "Time to deliver one event, retries included", ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.buffered = Gauge(
            "merlin_delivery_buffered", "Events waiting for an endpoint", ["endpoint"], registry=self.registry
        )
        self.assigned = Gauge(
            "merlin_forwarder_assigned_partitions", "Partitions this worker owns, per group", ["group"],
            registry=self.registry,
        )  # fmt: skip
        self.lag = Gauge(
            "merlin_forwarder_lag_records",
            "Records between a partition's committed offset and its end, per consumer group and topic",
            ["group", "topic", "partition"],
            registry=self.registry,
        )
        self.blocked_rooms = Gauge(
            "merlin_delivery_blocked_rooms", "Rooms an endpoint holds until an operator acts", ["endpoint"],
            registry=self.registry,
        )  # fmt: skip
        self.definition_version = Gauge(
            "merlin_endpoint_definition_version", "The version of each endpoint's definition running here",
            ["endpoint"], registry=self.registry,
        )  # fmt: skip
        self.definitions_refused = Counter(
            "merlin_endpoint_definitions_refused", "Endpoint definitions this worker could not run",
            ["endpoint"], registry=self.registry,
        )  # fmt: skip
        self.disabled = Gauge(
            "merlin_endpoint_disabled", "1 while an endpoint is disabled for failing too long", ["endpoint"],
            registry=self.registry,
        )  # fmt: skip
        self.disabled_total = Counter(
            "merlin_endpoints_disabled", "Times this worker disabled an endpoint for failing too long",
            ["endpoint"], registry=self.registry,
        )  # fmt: skip
        self.subscription_renewals = Counter(
            "merlin_settings_subscription_renewals",
            "Times this worker renewed its reader of the settings topic: a ping to itself was not read back",
            registry=self.registry,
        )
        self.subscription_up = Gauge(
            "merlin_settings_subscription_up", "1 while this worker reads its own pings back in time",
            registry=self.registry,
        )  # fmt: skip
        self.ping_round_trip = Histogram(
            "merlin_settings_ping_round_trip_seconds", "From writing a ping to reading it back",
            registry=self.registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.last_poll = Gauge(
            "merlin_forwarder_last_poll_timestamp_seconds",
            "When the consumer last polled the events topic (Unix time)",
            registry=self.registry,
        )
        self.last_poll_at = 0.0  # the same, on the monotonic clock, for readiness
        self.kafka = KafkaStats(self.registry)  # librdkafka's statistics of the worker's clients
        self.undelivered = OldestUndelivered(self.registry)
        # Made with the rest, not when the worker runs: a registry just built holds every metric the
        # worker exports (docs/reference/metrics.md is written from it).
        self.settings_skipped = counted_skips(self.registry)

    def heard(self, heard: Heard) -> None:
        """What the settings subscription's check found."""
        if heard.renewed:
            self.subscription_renewals.inc()
            self.subscription_up.set(0)
        if heard.round_trip is not None:
            self.ping_round_trip.observe(heard.round_trip)
            self.subscription_up.set(1)

    def polled(self) -> None:
        """The consumer just polled."""
        self.last_poll_at = time.monotonic()
        self.last_poll.set_to_current_time()
