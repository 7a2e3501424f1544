"""The write API's app-wide state, as one typed object: its settings, where events go, its metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Histogram
from starlette.requests import Request

from domain import Event
from kernel.kafka_stats import KafkaStats
from kernel.metrics import service_registry
from kernel.position import Position
from kernel.producer import AsyncProducer
from kernel.settings import KafkaSettings
from write_api.appender import Appender, EventAppender, producer_config
from write_api.settings import WriteApiSettings


class WriteApi:
    """What every route of the write API shares; its Kafka producer lives while the app runs."""

    def __init__(
        self, settings: WriteApiSettings, kafka: KafkaSettings, appender: Appender | None = None
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.registry = service_registry()
        self._append_latency = Histogram(
            "merlin_write_append_seconds",
            "Time from produce to broker acknowledgement",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.kafka_stats = KafkaStats(self.registry)
        self._given = appender
        self._appender = appender

    @classmethod
    def of(cls, request: Request) -> WriteApi:
        """The state of the app that serves ``request``."""
        state: WriteApi = request.app.state.write_api
        return state

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the Kafka producer (unless an appender was given) for as long as the app runs."""
        if self._given is not None:
            yield
            return
        settings = self.settings
        config = self.kafka.client(
            {
                **producer_config(
                    settings.linger_ms, settings.delivery_timeout_ms, settings.queue_max_messages
                ),
                **self.kafka_stats.config("producer", self.kafka.statistics_interval_ms),
            }
        )
        producer = AsyncProducer(config)
        self._appender = EventAppender(producer, self.kafka.events_topic, self.kafka.min_insync)
        try:
            yield
        finally:
            self._appender = None
            await producer.close()

    @property
    def appender(self) -> Appender:
        if self._appender is None:
            raise RuntimeError("the write API is not running")
        return self._appender

    async def append(self, event: Event, traceparent: str | None) -> Position:
        """Append ``event`` durably; its position in the log."""
        with self._append_latency.time():
            return await self.appender.append(event, traceparent)

    async def readiness(self) -> dict[str, bool]:
        return {"kafka": await self.appender.ready()}
