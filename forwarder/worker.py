"""The forwarder worker: shared resources, and the whole flow under a backoff supervisor.

A crashed flow restarts from the committed positions after a growing, jittered
delay; past ``max_restarts`` within ``restart_window`` the worker gives up
(``SupervisorGaveUp``) so that its process manager sees a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from forwarder.consumer import EventConsumer
from forwarder.dead_letters import DeadLetters
from forwarder.delivery import AiohttpSend, Deliverer
from forwarder.endpoints import Endpoint, load_endpoints
from forwarder.flow import Flow
from forwarder.health import Health, serving
from forwarder.metrics import ForwarderMetrics
from forwarder.settings import ForwarderSettings
from forwarder.supervisor import BackoffPolicy, BackoffSupervisor, Hooks
from kernel.producer import AsyncProducer
from kernel.settings import ClientConfig, KafkaSettings
from read_store.engines import create_engine
from read_store.migrate import upgrade
from read_store.settings import ReadStoreSettings
from read_store.writer import ProjectionStore

log = structlog.get_logger()


class Forwarder:
    """One forwarder worker: a member of the consumer group that projects and delivers what it is assigned."""

    def __init__(
        self,
        settings: ForwarderSettings,
        kafka: KafkaSettings,
        store: ReadStoreSettings,
        metrics: ForwarderMetrics | None = None,
        endpoints: list[Endpoint] | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.store_settings = store
        self.metrics = metrics or ForwarderMetrics()
        self.endpoints = endpoints if endpoints is not None else load_endpoints(settings.endpoints_file)

    def consumer_config(self) -> ClientConfig:
        static = {"group.instance.id": self.settings.instance_id} if self.settings.instance_id else {}
        return self.kafka.client(
            {
                **static,
                "group.id": self.settings.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.settings.session_timeout_ms,
                "heartbeat.interval.ms": max(100, self.settings.session_timeout_ms // 3),
                "max.poll.interval.ms": self.settings.max_poll_interval_ms,
                "fetch.wait.max.ms": 10,
                # librdkafka prefetches 100,000 records per partition by default, and a pause
                # (back-pressure) throws the prefetched records away: keep about a batch.
                "queued.min.messages": self.settings.batch_max,
            }
        )

    def policy(self, max_restarts: int | None = None) -> BackoffPolicy:
        return BackoffPolicy(
            min_backoff=self.settings.restart_min_backoff,
            max_backoff=self.settings.restart_max_backoff,
            random_factor=self.settings.restart_random_factor,
            reset_after=self.settings.restart_reset_after,
            max_restarts=max_restarts,
            within=self.settings.restart_window,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; raise SupervisorGaveUp past the restart limit.

        With a metrics port, ``/healthz``, ``/readyz`` and ``/metrics`` are served meanwhile.
        """
        if self.settings.migrate_on_start:
            await upgrade(self.store_settings.url, self.store_settings.db_schema)
        engine = create_engine(self.store_settings.url, writer=True, schema=self.store_settings.db_schema)
        store = ProjectionStore(engine, self.kafka.events_topic)
        producer = AsyncProducer(self.kafka.client({"acks": "all", "enable.idempotence": True}))
        dead_letters = DeadLetters(producer, self.kafka.dead_letter_topic)
        send = AiohttpSend(sum(endpoint.max_in_flight for endpoint in self.endpoints))
        deliverers = [Deliverer(send, endpoint) for endpoint in self.endpoints]

        async def flow() -> None:
            source = EventConsumer(
                self.consumer_config(), self.kafka.events_topic, store.load_positions, self.metrics,
                delivers=bool(deliverers),
            )  # fmt: skip
            await Flow(
                self.settings, source, store, dead_letters, deliverers, self.metrics, self.policy()
            ).run(stop)

        health = Health(self.metrics, self.settings.poll_timeout, store.ping)

        def started(_name: str, _restarts: int) -> None:
            health.flow_running = True

        def failed(name: str, exc: BaseException, delay: float) -> None:
            health.flow_running = False
            self.metrics.flow_restarts.inc()
            log.error("flow_crashed", restart_in=round(delay, 3), error=repr(exc))

        supervisor = BackoffSupervisor(
            "flow", flow, self.policy(self.settings.max_restarts), Hooks(on_start=started, on_failure=failed)
        )
        try:
            async with contextlib.AsyncExitStack() as operations:
                if self.settings.metrics_port:
                    await operations.enter_async_context(
                        serving(
                            self.settings.metrics_host,
                            self.settings.metrics_port,
                            self.metrics.registry,
                            health,
                        )
                    )
                await supervisor.run()
        finally:
            await send.close()
            await producer.close()
            await store.close()
            await engine.dispose()
