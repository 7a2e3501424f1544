"""An endpoint's role in its flow: what the projection applied, delivered by one dispatcher.

- Each batch waits at the applied gate (``forwarder.applied``) until the
  projection has passed it; only the applied events of the endpoint's types go
  to the dispatcher, every other record is finished at once. Records that are
  no event are skipped: the projection dead-letters them.
- While the dispatcher's buffer is full, the partitions feeding it are paused,
  until it drains to half.
- On a revocation the dispatcher drops the partitions' work.
- It is its dispatcher's ``DispatchReport``: what the dispatcher did fans out
  from here, and only from here, to the ledger (what may be committed), the
  metrics and the operators' controls (``DispatchWatch``).

It calls only its dispatcher, the applied gate, the dead-letter writer, the
ledger, the metrics and the controls. It never writes the read store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Protocol

from forwarder.applied import AppliedGate
from forwarder.dispatcher import Dispatcher
from forwarder.jobs import Blocked, Ended, Job
from forwarder.ledger import Ledger
from forwarder.metrics import ForwarderMetrics
from forwarder.parked import Rereads
from forwarder.source import Batch
from kernel import tracing
from webhooks.dead_letters import DeadLetters
from webhooks.endpoints import Endpoint
from webhooks.sending import Attempt, Deliverer


class DispatchWatch(Protocol):
    """What the operators' controls (``forwarder.controls``) hear of an endpoint's dispatcher."""

    def blocked(self, endpoint: str, room: Blocked) -> None: ...

    def finished(self, endpoint: str, job: Job) -> None:
        """``job``, its room's head event, was sent, dead-lettered or skipped."""
        ...

    def delivered(self, endpoint: str, outcome: str) -> None:
        """One delivery ended in ``outcome`` (``blocked`` too)."""
        ...


class Delivering:
    """An endpoint's ``BatchHandler``, and its dispatcher's ``DispatchReport``."""

    stop_grace = 0.0  # what it has not sent, its next run sends

    def __init__(
        self,
        name: str,
        deliverer: Deliverer,
        gate: AppliedGate,
        ledger: Ledger,
        dead_letters: DeadLetters,
        metrics: ForwarderMetrics,
        watch: DispatchWatch,
        rereads: Rereads | None = None,
    ) -> None:
        self.name = name
        self.gate = gate
        self.ledger = ledger
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.watch = watch
        self._endpoint = deliverer.endpoint.name  # a definition changes in place, never its name
        self.dispatcher = Dispatcher(deliverer, self, rereads)

    # -- the batches ----------------------------------------------------------------------------

    async def handle(self, batch: Batch, generation: int) -> None:
        mine = self.ledger.still_mine(batch.records, generation)
        if not mine:
            return  # all revoked while waiting: the new owners take them
        metrics = self.metrics
        metrics.batch_size.labels(self.name).observe(len(mine))
        with metrics.batch_seconds.labels(self.name).time():
            deliverable = await self.gate.deliverable([consumed.record for consumed in mine])
        dispatcher, track = self.dispatcher, self.ledger.tracker.add
        wanted = dispatcher.endpoint.event_types
        traced = tracing.ENABLED
        # Partitions revoked while waiting at the gate: their new owner delivers these.
        for consumed in self.ledger.still_mine(mine, generation):
            record, event = consumed.record, consumed.record.event
            if (
                event is None
                or (record.partition, record.offset) not in deliverable
                or event.event_type not in wanted
            ):
                track(record.partition, record.offset, 0)
                continue
            # When the record was written (Kafka's timestamp, in ms): the age of what waits for the endpoint.
            written = consumed.message.timestamp()[1]
            track(record.partition, record.offset, 1, written / 1000 if written > 0 else time.time())
            body = consumed.message.value() or b""
            job = Job(record.partition, record.offset, event.room_id, str(event.event_id), body, generation)
            if traced:
                traceparent, tracestate = tracing.trace_headers(consumed.message.headers())
                job = replace(job, traceparent=traceparent, tracestate=tracestate)
            dispatcher.submit(job)

    def to_pause(self, paused: set[int]) -> set[int]:
        dispatcher = self.dispatcher
        feeding = dispatcher.feeding_partitions()
        if dispatcher.full() or (feeding & paused and not dispatcher.drained()):
            return feeding
        return set()

    def revoked(self, partitions: set[int]) -> None:
        self.dispatcher.drop(partitions)

    async def answers(self) -> bool:
        await asyncio.wait_for(self.gate.ping(), 1.0)
        return True

    def stages(self) -> Mapping[str, Callable[[], Awaitable[None]]]:
        return {f"dispatcher:{self._endpoint}": self.dispatcher.run}

    # -- the dispatcher's report ----------------------------------------------------------------

    def finished(self, job: Job) -> None:
        self.ledger.finish(job.partition, job.offset, job.generation)

    async def dead_letter(self, job: Job, endpoint: Endpoint, reason: str, attempts: list[Attempt]) -> None:
        await self.dead_letters.send_failed_delivery(
            partition=job.partition, offset=job.offset, room_id=job.room_id, event_id=job.event_id,
            event=job.body, endpoint=endpoint, reason=reason, attempts=attempts,
        )  # fmt: skip
        self.metrics.dead_letters.labels("delivery").inc()

    def ended(self, job: Job, outcome: Ended, seconds: float) -> None:
        self._observe(outcome, seconds)
        self.watch.finished(self._endpoint, job)

    def blocked(self, room: Blocked, seconds: float) -> None:
        self._observe("blocked", seconds)
        self.watch.blocked(self._endpoint, room)

    def _observe(self, outcome: str, seconds: float) -> None:
        endpoint, metrics = self._endpoint, self.metrics
        metrics.deliveries.labels(endpoint, outcome).inc()
        metrics.delivery_seconds.labels(endpoint).observe(seconds)
        metrics.buffered.labels(endpoint).set(self.dispatcher.size)
        metrics.blocked_rooms.labels(endpoint).set(len(self.dispatcher.blocked_rooms()))
        self.watch.delivered(endpoint, outcome)
