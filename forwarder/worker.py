"""The forwarder's flow: consume a batch → dead-letter poison → project in one transaction → commit.

The flow restarts from the stored positions after any crash, with growing,
jittered delays; a stop request lets the current batch finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import backoff
import structlog
from confluent_kafka import KafkaException, Message

from domain import MalformedEvent, decode
from forwarder.consumer import EventConsumer
from forwarder.dead_letters import DeadLetters
from forwarder.metrics import ForwarderMetrics
from forwarder.projection import Record
from forwarder.settings import ForwarderSettings
from forwarder.store import ProjectionStore
from merlin.producer import AsyncProducer
from merlin.settings import ClientConfig, KafkaSettings
from read_api.database import create_engine
from read_api.migrate import upgrade
from read_api.settings import ReadStoreSettings

log = structlog.get_logger()

# A flow that ran this long without crashing starts its restart delays afresh.
_HEALTHY_AFTER_SECONDS = 30.0


class Forwarder:
    """One forwarder worker: a member of the consumer group that projects what it is assigned."""

    def __init__(
        self,
        settings: ForwarderSettings,
        kafka: KafkaSettings,
        store: ReadStoreSettings,
        metrics: ForwarderMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.store_settings = store
        self.metrics = metrics or ForwarderMetrics()

    def consumer_config(self) -> ClientConfig:
        return self.kafka.client(
            {
                "group.id": self.settings.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.settings.session_timeout_ms,
                "max.poll.interval.ms": self.settings.max_poll_interval_ms,
                "fetch.wait.max.ms": 10,
            }
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, restarting the flow after crashes."""
        if self.settings.migrate_on_start:
            await upgrade(self.store_settings.url, self.store_settings.db_schema)
        engine = create_engine(self.store_settings.url, writer=True, schema=self.store_settings.db_schema)
        store = ProjectionStore(engine, self.kafka.events_topic)
        producer = AsyncProducer(self.kafka.client({"acks": "all", "enable.idempotence": True}))
        dead_letters = DeadLetters(producer, self.kafka.dead_letter_topic)
        delays = self._delays()
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await self._flow(store, dead_letters, stop)
                except Exception as exc:  # the flow restarts whatever broke it
                    self.metrics.flow_restarts.inc()
                    if time.monotonic() - started > _HEALTHY_AFTER_SECONDS:
                        delays = self._delays()
                    delay = next(delays)
                    log.exception("flow_crashed", restart_in=round(delay, 3), exc_info=exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
        finally:
            await producer.close()
            await engine.dispose()

    def _delays(self) -> Iterator[float]:
        expo = backoff.expo(base=2, factor=self.settings.restart_min_backoff)
        expo.send(None)  # backoff's generators must be primed before the first value
        for value in expo:
            yield backoff.full_jitter(min(value, self.settings.restart_max_backoff))

    async def _flow(self, store: ProjectionStore, dead_letters: DeadLetters, stop: asyncio.Event) -> None:
        consumer = EventConsumer(
            self.consumer_config(), self.kafka.events_topic, store.load_positions, self.metrics
        )
        await consumer.start()
        log.info("flow_started", group=self.settings.group_id, topic=self.kafka.events_topic)
        try:
            while not stop.is_set():
                batch = await consumer.batch(self.settings.batch_max, self.settings.poll_timeout)
                if batch:
                    next_offsets = await self._project(batch, store, dead_letters)
                    await consumer.commit(next_offsets)
        finally:
            await consumer.close()
            log.info("flow_stopped")

    async def _project(
        self, batch: list[Message], store: ProjectionStore, dead_letters: DeadLetters
    ) -> dict[int, int]:
        records: list[Record] = []
        for message in batch:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consume_error", error=error.str())
                continue
            partition, offset = message.partition() or 0, message.offset() or 0
            try:
                event = decode(message.value())
            except MalformedEvent as exc:
                await dead_letters.send(message, "decode", str(exc))
                self.metrics.dead_letters.labels("decode").inc()
                log.warning("poison_record", partition=partition, offset=offset, reason=str(exc))
                event = None
            records.append(Record(partition, offset, event))
        self.metrics.records.inc(len(records))
        self.metrics.batch_size.observe(len(records))
        with self.metrics.batch_seconds.time():
            changes = await store.apply(records)
        self.metrics.replayed.inc(changes.replayed)
        for outcome in changes.outcomes:
            self.metrics.outcomes.labels(outcome.status).inc()
        return {partition: offset + 1 for partition, offset in changes.positions.items()}
