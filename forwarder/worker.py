"""The forwarder worker: shared resources, and independent flows, each under its own backoff supervisor.

- The projection flow (consumer group ``<group>``) projects into the read
  store; it waits on no endpoint.
- One flow per endpoint (group ``<group>.endpoint.<name>``, offsets committed
  in Kafka) delivers what the projection applied; its backlog is the log. It
  runs while its endpoint is not paused (``forwarder.controls``).

A crashed flow restarts alone, from its committed positions, after a growing,
jittered delay; past ``max_restarts`` within ``restart_window`` the worker
gives up (``SupervisorGaveUp``) so that its process manager sees a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from forwarder.controls import Controls
from forwarder.endpoint_catalog import EndpointCatalog
from forwarder.endpoint_flows import EndpointFlows
from forwarder.flow_builders import EndpointFlowBuilder, FlowParts, ProjectionFlowBuilder
from forwarder.group_configs import configure_groups
from forwarder.health import Health, serving
from forwarder.intake import Intake
from forwarder.metrics import ForwarderMetrics
from forwarder.settings import ForwarderSettings
from forwarder.subscription import SubscriptionCheck
from forwarder.supervisor import BackoffSupervisor, Hooks, SupervisorGaveUp
from kernel import tracing
from kernel.control import ControlLog, ControlWriter
from kernel.errors import InfrastructureError
from kernel.producer import AsyncProducer
from kernel.settings import ClientConfig, KafkaSettings
from read_store.engines import create_engine
from read_store.reader import ReadStore
from read_store.settings import ReadStoreSettings
from read_store.writer import ProjectionStore
from webhooks.calls import HttpSend
from webhooks.catalog import ENDPOINT, check_record
from webhooks.dead_letters import DeadLetters
from webhooks.endpoints import Endpoint, endpoint_group, load_endpoints
from webhooks.given import define_given
from webhooks.settings import EndpointsSettings

log = structlog.get_logger()

# Each try to read the settings topic at start; tries go on (with a growing pause) until one succeeds.
_SUBSCRIBE_TIMEOUT = 10.0


class Forwarder:
    """One forwarder worker: a member of the consumer group that projects and delivers what it is assigned."""

    def __init__(
        self,
        settings: ForwarderSettings,
        kafka: KafkaSettings,
        store: ReadStoreSettings,
        metrics: ForwarderMetrics | None = None,
        endpoints: list[Endpoint] | None = None,
        endpoint_settings: EndpointsSettings | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.store_settings = store
        self.metrics = metrics or ForwarderMetrics()
        # Defined in the settings topic at start (created or updated); the topic defines the rest.
        self.endpoints = endpoints if endpoints is not None else load_endpoints(settings.endpoints_file)
        self.endpoint_settings = endpoint_settings or EndpointsSettings()

    def group(self, endpoint: str | None = None) -> str:
        """The projection's consumer group, or ``endpoint``'s."""
        return (
            self.settings.group_id if endpoint is None else endpoint_group(self.settings.group_id, endpoint)
        )

    def consumer_config(self, endpoint: str | None = None) -> ClientConfig:
        """The consumer of the projection's group, or of ``endpoint``'s."""
        static = {"group.instance.id": self.settings.instance_id} if self.settings.instance_id else {}
        client = "consumer:projection" if endpoint is None else f"consumer:endpoint:{endpoint}"
        stats = self.metrics.kafka.config(client, self.kafka.statistics_interval_ms)
        return self.kafka.client(
            {
                **static,
                "group.id": self.group(endpoint),
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                **self._membership(),
                "max.poll.interval.ms": self.settings.max_poll_interval_ms,
                "fetch.wait.max.ms": 10,
                # librdkafka prefetches 100,000 records per partition by default, and a pause
                # (back-pressure) throws the prefetched records away: keep about a batch.
                "queued.min.messages": self.settings.batch_max,
                # 1 MB a partition per fetch (the default) is about 2,000 uncompressed events: on a
                # topic written without compression, projection ran at 10.6k events/s, 17.7k with this.
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                **stats,
            }
        )

    def _membership(self) -> ClientConfig:
        settings = self.settings
        if settings.group_protocol == "consumer":  # the group's timing is on the broker (group_configs)
            return {"group.protocol": "consumer"}
        return {
            "group.protocol": "classic",
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": settings.heartbeat_ms,
            "partition.assignment.strategy": settings.assignment_strategy,
        }

    def group_configs(self) -> dict[str, str]:
        """What each of this worker's groups is given on the broker (consumer group protocol)."""
        return {
            "consumer.session.timeout.ms": str(self.settings.session_timeout_ms),
            "consumer.heartbeat.interval.ms": str(self.settings.heartbeat_ms),
        }

    async def _configure_groups(self, endpoints: list[str | None]) -> None:
        """Set the session and heartbeat of the groups of ``endpoints`` (None: the projection's)."""
        if self.settings.group_protocol != "consumer":
            return
        groups = [self.group(name) for name in endpoints]
        refused = await configure_groups(self.kafka, groups, self.group_configs())
        for group, reason in refused.items():
            # The group keeps the broker's defaults (a 45 s session and 5 s heartbeats in Kafka 4):
            # docs/operations.md says which broker settings allow the forwarder's.
            log.warning("group_configs_refused", group=group, reason=reason)
        # Brokers that batch assignments compute them at most once a second by default: a moved
        # partition would wait for that. Brokers without the config refuse it; nothing else changes.
        unbatched = await configure_groups(self.kafka, groups, {"consumer.assignment.interval.ms": "0"})
        for group, reason in unbatched.items():
            log.info("group_assignment_interval_kept", group=group, reason=reason)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; raise SupervisorGaveUp past a flow's restart limit.

        With a metrics port, ``/healthz``, ``/readyz`` and ``/metrics`` are served meanwhile,
        from the start: a worker waiting for its broker says so.
        """
        if self.settings.migrate_on_start:
            # Imported here: Alembic is a tenth of a second of a forwarder's start that most never use.
            from read_store.migrate import upgrade

            await upgrade(self.store_settings.url, self.store_settings.db_schema)
        settings, topic, schema = self.settings, self.kafka.events_topic, self.store_settings.db_schema
        engine = create_engine(self.store_settings.url, writer=True, schema=schema)
        store = ProjectionStore(engine, topic)
        reads = ReadStore(create_engine(self.store_settings.url, schema=schema), topic)
        stats = self.metrics.kafka.config("producer", self.kafka.statistics_interval_ms)
        producer = AsyncProducer(self.kafka.client({"acks": "all", "enable.idempotence": True, **stats}))
        control = ControlLog(
            self.kafka, shapes={ENDPOINT: check_record}, skipped=self.metrics.settings_skipped,
            client=self.metrics.kafka.config("consumer:settings", self.kafka.statistics_interval_ms),
        )  # fmt: skip
        health = Health(self.metrics, settings.poll_timeout, store.ping, lambda: producer.ready(topic))
        send = HttpSend(allowed=self.endpoint_settings.allowed_networks)
        try:
            async with contextlib.AsyncExitStack() as operations:
                if settings.metrics_port:
                    await operations.enter_async_context(
                        serving(settings.metrics_host, settings.metrics_port, self.metrics.registry, health)
                    )
                if await self._subscribed(control, stop):
                    writer = ControlWriter(producer, control)
                    check = SubscriptionCheck(
                        control, lambda: self._pinger(control), self.instance, settings.settings_ping_every,
                        settings.settings_ping_within, self.metrics.heard,
                    )  # fmt: skip
                    health.subscription = check
                    operations.push_async_callback(check.close)
                    operations.push_async_callback(_cancelled, asyncio.create_task(check.run()))
                    await self._flows(stop, control, writer, producer, store, reads, send, health, operations)
        finally:
            await control.close()
            await send.close()
            await producer.close()
            await store.close()
            await reads.close()
            await engine.dispose()
            if tracing.ENABLED:  # the spans of the last batches, before the process ends
                await asyncio.to_thread(tracing.flush)

    def _pinger(self, control: ControlLog) -> ControlWriter:
        """A writer of the subscription's pings on a producer of its own, renewed with the reader."""
        within_ms = int(self.settings.settings_ping_within * 1000)
        config = self.kafka.client({"acks": "all", "linger.ms": 0, "message.timeout.ms": within_ms})
        return ControlWriter(AsyncProducer(config), control)

    async def _subscribed(self, control: ControlLog, stop: asyncio.Event) -> bool:
        """Read the settings topic whole, trying again until the broker answers; False if stopped first."""
        delay = self.settings.restart_min_backoff
        while not stop.is_set():
            try:
                await control.start(timeout=_SUBSCRIBE_TIMEOUT)
                return True
            except InfrastructureError as exc:
                log.warning("settings_topic_unreadable", error=str(exc), retry_in=round(delay, 3))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, self.settings.restart_max_backoff)
        return False

    async def _flows(
        self,
        stop: asyncio.Event,
        control: ControlLog,
        writer: ControlWriter,
        producer: AsyncProducer,
        store: ProjectionStore,
        reads: ReadStore,
        send: HttpSend,
        health: Health,
        operations: contextlib.AsyncExitStack,
    ) -> None:
        """Run the projection's flow and every endpoint's until ``stop``."""
        settings = self.settings
        dead_letters = DeadLetters(producer, self.kafka.dead_letter_topic)
        # An endpoint defined before the settings topic knew when (no added_at) starts from now.
        first_run = datetime.now(UTC)
        box = self.endpoint_settings.box() if self.endpoint_settings.keyed else None
        allowed = self.endpoint_settings.allowed_networks
        await define_given(self.endpoints, control, writer, box, allowed)
        catalog = EndpointCatalog(control, box, self.metrics, allowed)
        await self._configure_groups([None])  # each endpoint's, as its flow starts
        controls = Controls(control, writer, self.instance, self.metrics)
        operations.push_async_callback(controls.close)

        parts = FlowParts(settings, self.kafka, self.metrics, dead_letters, self.consumer_config)
        projection = ProjectionFlowBuilder(parts, store)
        rates = asyncio.create_task(controls.report_rates(lambda: catalog.endpoints, settings.report_every))
        operations.push_async_callback(_cancelled, rates)
        disabling = asyncio.create_task(
            controls.disable_failing(lambda: catalog.endpoints, settings.report_every)
        )
        operations.push_async_callback(_cancelled, disabling)

        async def run_endpoint(name: str, ended: asyncio.Event) -> None:
            try:
                await self._configure_groups([name])
            except InfrastructureError as exc:  # the group keeps the broker's defaults; delivery goes on
                log.warning("group_configs_unset", group=self.group(name), error=str(exc))
            if name not in catalog.endpoints:
                # Deleted while its group was being configured: a normal turn of events, and the
                # deletion already told the flows. Nothing to run.
                log.info("endpoint_gone_before_start", endpoint=name)
                return
            build = EndpointFlowBuilder(parts, name, catalog, reads, send, controls, first_run)
            await self._endpoint(name, build, ended, health, controls)

        def gone(name: str) -> None:
            health.running.pop(f"endpoint:{name}", None)
            self.metrics.undelivered.forget(name)
            self.metrics.kafka.forget(f"consumer:endpoint:{name}")

        flows = EndpointFlows(catalog, run_endpoint, controls.reconfigure, gone)
        try:
            async with asyncio.TaskGroup() as running:
                running.create_task(self._supervise("projection", projection, stop, health))
                running.create_task(flows.run(stop))
        except* SupervisorGaveUp as gave_up:
            raise gave_up.exceptions[0] from None

    @property
    def instance(self) -> str:
        """This worker's name in reports: its static member id, or host and process."""
        return self.settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"

    async def _endpoint(
        self, name: str, build: Callable[[], Intake], stop: asyncio.Event, health: Health, controls: Controls
    ) -> None:
        """Run ``name``'s flow while it is not paused, until ``stop``."""
        flow_name = f"endpoint:{name}"
        while not stop.is_set():
            if controls.paused(name):
                health.running[flow_name] = True  # paused by an operator: nothing is wrong
                log.info("endpoint_paused", endpoint=name)
                await _first(stop.wait(), controls.until_paused(name, False))
                continue
            flow_stop = asyncio.Event()
            watcher = asyncio.create_task(_first(stop.wait(), controls.until_paused(name), then=flow_stop))
            try:
                await self._supervise(flow_name, build, flow_stop, health)
            finally:
                watcher.cancel()
            log.info("endpoint_flow_stopped", endpoint=name, paused=controls.paused(name))

    async def _supervise(
        self, name: str, build: Callable[[], Intake], stop: asyncio.Event, health: Health
    ) -> None:
        def started(_name: str, _restarts: int) -> None:
            health.running[name] = True

        def failed(_name: str, exc: BaseException, delay: float) -> None:
            health.running[name] = False
            self.metrics.flow_restarts.labels(name).inc()
            log.error("flow_crashed", flow=name, restart_in=round(delay, 3), error=repr(exc))

        health.running[name] = False
        hooks = Hooks(on_start=started, on_failure=failed)

        async def run() -> None:
            if not stop.is_set():  # e.g. paused while backing off after a crash
                await build().run(stop)

        policy = self.settings.restart_policy(self.settings.max_restarts)
        await BackoffSupervisor(name, run, policy, hooks, recovered=health.store_answers).run()


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _first(*waits: Awaitable[object], then: asyncio.Event | None = None) -> None:
    """Wait until the first of ``waits`` is done, cancel the others, and set ``then``."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    if then is not None:
        then.set()
