"""The projection's role in a flow: each batch applied to the read store in one transaction.

The worker's projection plays it, and so does ``merlin rebuild``
(``forwarder.rebuild``) into a new store.

- Records that are no event go to its ``PoisonRecords``: the live projection
  dead-letters them (stage ``decode``) before the positions pass them.
- A record the store refuses for good is isolated by halving the batch,
  dead-lettered (stage ``store``, once per flow) and recorded as rejected with
  the store's reason; the rest applies. Errors a retry may cure are not caught:
  the batch stage's supervisor retries the batch, and nothing is dead-lettered.
- Each batch's size, time, outcomes and replays go to the metrics.

It calls only the store (``ProjectionWriter``), the dead-letter writer, its
``PoisonRecords``, the ledger and the metrics. It delivers nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import structlog

from forwarder.ledger import Ledger
from forwarder.metrics import ForwarderMetrics
from forwarder.source import Batch, Consumed, ProjectionWriter
from kernel import tracing
from read_store.projection import Changes
from read_store.writer import StoreRefused
from webhooks.dead_letters import DeadLetters

log = structlog.get_logger()

# Once stopped, the batches already consumed still reach the store (for this long at most), so
# nothing is half-done.
_STOP_GRACE = 10.0


class PoisonRecords(Protocol):
    """What becomes of the records of a batch that are no event."""

    async def met(self, poison: list[tuple[Consumed, str]]) -> None:
        """``poison``, each with why it is no event, is in a batch: return once the positions may pass it."""
        ...


class DeadLetteredPoison:
    """The live projection's poison records: on the dead-letter topic before the positions pass them."""

    def __init__(self, dead_letters: DeadLetters, metrics: ForwarderMetrics) -> None:
        self.dead_letters = dead_letters
        self.metrics = metrics

    async def met(self, poison: list[tuple[Consumed, str]]) -> None:
        # All of a batch's poison records go at once, and all are acknowledged before the
        # positions move past them: one round trip, not one each.
        await asyncio.gather(*(self.dead_letters.send(c.message, "decode", reason) for c, reason in poison))
        for consumed, reason in poison:
            self.metrics.dead_letters.labels("decode").inc()
            log.warning(
                "poison_record",
                partition=consumed.record.partition,
                offset=consumed.record.offset,
                reason=reason,
            )


class Projecting:
    """The projection's ``BatchHandler``."""

    stop_grace = _STOP_GRACE

    def __init__(
        self,
        name: str,
        store: ProjectionWriter,
        dead_letters: DeadLetters,
        poison: PoisonRecords,
        ledger: Ledger,
        metrics: ForwarderMetrics,
    ) -> None:
        self.name = name
        self.store = store
        self.dead_letters = dead_letters
        self.poison = poison
        self.ledger = ledger
        self.metrics = metrics
        # Records this flow has dead-lettered as refused by the store: a retried batch (after a
        # transient error) sends each of them once, not once per retry.
        self._refused_sent: set[tuple[int, int]] = set()

    async def handle(self, batch: Batch, generation: int) -> None:
        mine = self.ledger.still_mine(batch.records, generation)
        if not mine:
            return  # all revoked while waiting: the new owners take them
        poison = [(consumed, consumed.malformed) for consumed in mine if consumed.malformed is not None]
        if poison:
            await self.poison.met(poison)
        metrics = self.metrics
        metrics.batch_size.labels(self.name).observe(len(mine))
        with metrics.batch_seconds.labels(self.name).time():
            changes = await (self._traced_apply(mine) if tracing.ENABLED else self._apply(mine))
        metrics.replayed.inc(changes.replayed)
        for status, count in Counter(outcome.status for outcome in changes.outcomes).items():
            metrics.outcomes.labels(status).inc(count)
        # Partitions revoked while projecting: their new owner commits these.
        track = self.ledger.tracker.add
        for consumed in self.ledger.still_mine(mine, generation):
            track(consumed.record.partition, consumed.record.offset, 0)

    async def _traced_apply(self, consumed: list[Consumed]) -> Changes:
        """``_apply`` as a CONSUMER span of its own trace, linked to each event's trace context (the
        producer's span, from the record's headers); the SDK keeps the first 128 links
        (``OTEL_SPAN_LINK_COUNT_LIMIT``)."""
        from opentelemetry.trace import Link, SpanKind, get_current_span

        links = []
        for c in consumed:
            context = tracing.context_of(*tracing.trace_headers(c.message.headers()))
            if context is not None:
                links.append(Link(get_current_span(context).get_span_context()))
        topic = consumed[0].message.topic() or ""
        partitions = {c.record.partition for c in consumed}
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": len(consumed),
            "merlin.flow": self.name,
        }
        if len(partitions) == 1:
            attributes["messaging.destination.partition.id"] = str(next(iter(partitions)))
        with tracing.tracer().start_as_current_span(
            f"process {topic}", kind=SpanKind.CONSUMER, links=links, attributes=attributes
        ) as span:
            changes = await self._apply(consumed)
            span.set_attribute("merlin.projection.replayed", changes.replayed)
            return changes

    async def _apply(self, consumed: list[Consumed]) -> Changes:
        """Apply ``consumed`` in order, isolating any record the store refuses for good.

        A refused batch is split in two, each half applied in turn (so in log order),
        until the refused record stands alone: it goes to the dead-letter topic, its
        event is recorded as rejected with the store's reason, and the rest applies.
        """
        try:
            return await self.store.apply([c.record for c in consumed])
        except StoreRefused as refused:
            if len(consumed) > 1:
                middle = len(consumed) // 2
                first = await self._apply(consumed[:middle])
                return first.then(await self._apply(consumed[middle:]))
            return await self._reject(consumed[0], refused.reason)

    async def _reject(self, consumed: Consumed, reason: str) -> Changes:
        """Dead-letter ``consumed``, refused by the store (once per flow); record its event as rejected."""
        record = consumed.record
        place = (record.partition, record.offset)
        if place not in self._refused_sent:
            await self.dead_letters.send(consumed.message, "store", reason)
            self._refused_sent.add(place)
            self.metrics.dead_letters.labels("store").inc()
            log.warning("record_refused", partition=record.partition, offset=record.offset, reason=reason)
        try:
            return await self.store.apply([record], {place: reason})
        except StoreRefused as again:
            # Not the record: the store refuses even its rejection. A crash, retried with backoff.
            raise RuntimeError(f"the read store refused recording a rejection: {again.reason}") from again

    def to_pause(self, paused: set[int]) -> set[int]:
        return set()  # the projection waits on nothing but its store

    def revoked(self, partitions: set[int]) -> None:
        self._refused_sent = {place for place in self._refused_sent if place[0] not in partitions}

    async def answers(self) -> bool:
        await asyncio.wait_for(self.store.ping(), 1.0)
        return True

    def stages(self) -> Mapping[str, Callable[[], Awaitable[None]]]:
        return {}
