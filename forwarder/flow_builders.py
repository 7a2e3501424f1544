"""How the worker builds its flows, anew at every (re)start: the projection's, and each endpoint's.

A flow is an ``Intake`` around one role; each builder picks the source, the
role and what the role is given. Nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from forwarder.applied import AppliedGate, AppliedReads
from forwarder.consumer import AssignedConsumer, EventConsumer, log_reader_config
from forwarder.controls import Controls
from forwarder.delivering import Delivering
from forwarder.endpoint_catalog import EndpointCatalog
from forwarder.intake import Intake
from forwarder.ledger import Ledger
from forwarder.metrics import ForwarderMetrics
from forwarder.projecting import DeadLetteredPoison, Projecting
from forwarder.rereads import LogRereads
from forwarder.settings import ForwarderSettings
from kernel.kafka_stats import without_stats
from kernel.settings import ClientConfig, KafkaSettings
from read_store.writer import ProjectionStore
from webhooks.calls import Send
from webhooks.dead_letters import DeadLetters
from webhooks.sending import Deliverer


@dataclass(frozen=True)
class FlowParts:
    """What every flow of a worker is built with."""

    settings: ForwarderSettings
    kafka: KafkaSettings
    metrics: ForwarderMetrics
    dead_letters: DeadLetters
    consumer_config: Callable[[str | None], ClientConfig]  # the projection's group (None) or an endpoint's


class ProjectionFlowBuilder:
    """Builds the projection's flow: its group's consumer, from the store's positions, into the store."""

    def __init__(self, parts: FlowParts, store: ProjectionStore) -> None:
        self.parts = parts
        self.store = store

    def __call__(self) -> Intake:
        parts, name = self.parts, "projection"
        source = EventConsumer(
            parts.consumer_config(None),
            parts.kafka.events_topic,
            parts.metrics,
            positions=self.store.load_positions,
        )
        ledger = Ledger()
        poison = DeadLetteredPoison(parts.dead_letters, parts.metrics)
        projecting = Projecting(name, self.store, parts.dead_letters, poison, ledger, parts.metrics)
        policy = parts.settings.restart_policy()
        return Intake(name, parts.settings, source, projecting, ledger, parts.metrics, policy)


class EndpointFlowBuilder:
    """Builds one endpoint's flow from its definition as it stands then, and hands its dispatcher to the
    operators' controls."""

    def __init__(
        self,
        parts: FlowParts,
        name: str,
        catalog: EndpointCatalog,
        reads: AppliedReads,
        send: Send,
        controls: Controls,
        first_run: datetime,
    ) -> None:
        self.parts = parts
        self.name = name
        self.catalog = catalog
        # The last definition known: what a flow restarted while its deletion is on its way is built with.
        self.defined = catalog.endpoints[name]
        self.reads = reads
        self.send = send
        self.controls = controls
        self.first_run = first_run  # when an endpoint without a time of its own starts

    def __call__(self) -> Intake:
        parts, settings = self.parts, self.parts.settings
        endpoint = self.catalog.endpoints.get(self.name, self.defined)
        config = parts.consumer_config(endpoint.name)
        # Without a time of its own: no later than where the projection's group got to, so a worker
        # upgraded from one shared group sends everything it had not sent yet.
        fallback = None
        if endpoint.since is None:  # only to read its commits: not a member, static or not
            fallback = {k: v for k, v in without_stats(config).items() if k != "group.instance.id"}
            fallback["group.id"] = settings.group_id
        since = endpoint.since or endpoint.added_at or self.first_run
        topic = parts.kafka.events_topic
        source = EventConsumer(config, topic, parts.metrics, since=since, no_later_than=fallback)
        ledger, gate = Ledger(), AppliedGate(self.reads)
        parts.metrics.undelivered.watch(endpoint.name, ledger.tracker)
        log = AssignedLog(
            log_reader_config(parts.kafka, f"{config['group.id']}.rereads", settings.batch_max), topic
        )
        rereads = LogRereads(log, gate, ledger.tracker, endpoint, settings.poll_timeout)
        name = f"endpoint:{endpoint.name}"
        deliverer = Deliverer(self.send, endpoint)
        delivering = Delivering(
            name, deliverer, gate, ledger, parts.dead_letters, parts.metrics, self.controls, rereads
        )
        self.controls.attach(self.name, delivering.dispatcher)
        return Intake(name, settings, source, delivering, ledger, parts.metrics, settings.restart_policy())


class AssignedLog:
    """Opens one partition of the log from an offset, outside any group (a ``LogOpener``)."""

    def __init__(self, config: ClientConfig, topic: str) -> None:
        self.config = config
        self.topic = topic

    def __call__(self, partition: int, start: int) -> AssignedConsumer:
        return AssignedConsumer(self.config, self.topic, {partition: start})
