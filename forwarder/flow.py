"""The forwarder's flow: consume → project → deliver → commit, each stage supervised.

- The consumer stage polls without long pauses, so the worker never leaves the
  group; back-pressure pauses the partitions that feed a full endpoint buffer
  and resumes them once drained. While the projector's queue is full the
  consumer fetches nothing more, and pauses the waiting batches' partitions
  only if it stays full (``backlog_pause_after``): a pause drops what
  librdkafka has fetched ahead for them.
- The projector stage applies each batch in one transaction, then hands the
  events it applied to every endpoint that wants them. A record the store
  refuses for good is isolated and dead-lettered; the rest applies.
- One dispatcher per endpoint delivers them, ordered per room.
- Offsets are committed only up to the last record that is projected and
  finished for every endpoint, in arrival order.
- On a rebalance, everything in flight for the revoked partitions is dropped
  and what was finished is committed; partitions the flow keeps (cooperative
  rebalancing takes only what changes owner) go on untouched. A partition
  assigned again starts from the committed positions.

The flow is given its source, its store and its dead-letter writer
(``forwarder.source``), so all of this runs without a broker in unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable

import structlog

from forwarder.dispatcher import Dispatcher, DispatchWatch, Job
from forwarder.metrics import ForwarderMetrics
from forwarder.rereads import LogOpener, LogRereads
from forwarder.settings import ForwarderSettings
from forwarder.source import Batch, Consumed, ProjectionWriter, Source
from forwarder.supervisor import BackoffPolicy, BackoffSupervisor, Hooks
from forwarder.tracker import OffsetTracker
from read_store.projection import Changes
from read_store.writer import StoreRefused
from webhooks.dead_letters import DeadLetters
from webhooks.endpoints import Endpoint
from webhooks.sending import Attempt, Deliverer

log = structlog.get_logger()

_PROJECTOR_QUEUE = 4  # batches waiting for the projector before the partitions pause


class Flow:
    """One run of the whole flow; the worker's supervisor starts a new one if it crashes."""

    def __init__(
        self,
        name: str,
        settings: ForwarderSettings,
        source: Source,
        store: ProjectionWriter,
        dead_letters: DeadLetters,
        deliverers: list[Deliverer],
        metrics: ForwarderMetrics,
        stage_policy: BackoffPolicy,
        *,
        reports_poison: bool = True,
        watch: DispatchWatch | None = None,
        open_log: LogOpener | None = None,
    ) -> None:
        self.name = name
        # Only one flow reads each record for the read store (the projection): it alone
        # dead-letters the records that are no event; an endpoint's flow just skips them.
        self.reports_poison = reports_poison
        self.settings = settings
        self.store = store
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.stage_policy = stage_policy
        self.tracker = OffsetTracker()
        # Bumped by every revocation; work tagged with a generation older than its partition's
        # last revocation (``_reset_at``) belongs to an earlier owner's turn and is dropped.
        self.generation = 0
        self._reset_at: dict[int, int] = {}
        self.paused: set[int] = set()
        self._committed: dict[int, int] = {}
        # Records this flow has dead-lettered as refused by the store: a retried batch (after a
        # transient error) sends each of them once, not once per retry.
        self._refused_sent: set[tuple[int, int]] = set()
        self._batches: deque[tuple[int, Batch]] = deque()
        self._batch_ready = asyncio.Event()
        self._batch_taken = asyncio.Event()  # set each time the projector finishes the head batch
        self._full_since: float | None = None  # when the projector's queue last became full
        self._idle = asyncio.Event()  # set while the projector has nothing to do
        self._idle.set()
        self.source = source
        self.watch = watch
        self.dispatchers = {
            deliverer.endpoint.name: self._dispatcher(deliverer, watch, open_log) for deliverer in deliverers
        }

    def _dispatcher(
        self, deliverer: Deliverer, watch: DispatchWatch | None, open_log: LogOpener | None
    ) -> Dispatcher:
        # Given the log (``open_log``), a blocked room's backlog past a buffer's worth is left there.
        endpoint = deliverer.endpoint
        rereads = None
        if open_log is not None:
            rereads = LogRereads(open_log, self.store, self.tracker, endpoint, self.settings.poll_timeout)
        return Dispatcher(
            deliverer, self._finished, self._dead_letter, self._delivered(endpoint.name), watch, rereads
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run the stages until ``stop`` is set or one of them gives up."""
        await self.source.start(self._revoked)
        log.info("flow_started", flow=self.name)
        try:
            async with asyncio.TaskGroup() as stages:
                stages.create_task(self._supervise("projector", self._project_forever, self._store_answers))
                for name, dispatcher in self.dispatchers.items():
                    stages.create_task(self._supervise(f"dispatcher:{name}", dispatcher.run))
                consuming = stages.create_task(self._consume(stop))
                await consuming
                if not self.dispatchers:  # what a delivery flow has not sent, its next run sends
                    await self._finish_projecting()
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            await self.source.commit(self.tracker.committable())
            await self.source.close()
            log.info("flow_stopped", flow=self.name)

    async def _finish_projecting(self, grace: float = 10.0) -> None:
        """On stop, let the batches already consumed reach the store (bounded), so nothing is half-done."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)

    async def _store_answers(self) -> bool:
        await asyncio.wait_for(self.store.ping(), 1.0)
        return True

    async def _supervise(
        self,
        name: str,
        child: Callable[[], Awaitable[None]],
        recovered: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        hooks = Hooks(
            on_start=lambda stage, restarts: log.info(
                "stage_started", flow=self.name, stage=stage, restarts=restarts
            ),
            on_stop=lambda stage: log.info("stage_stopped", flow=self.name, stage=stage),
            on_failure=self._stage_failed,
        )
        # After a store outage the projector restarts within about a second of the store's return,
        # not at the end of a backoff that may have grown to its cap.
        await BackoffSupervisor(name, child, self.stage_policy, hooks, recovered=recovered).run()

    def _stage_failed(self, stage: str, exc: BaseException, delay: float) -> None:
        self.metrics.stage_restarts.labels(stage).inc()
        log.error("stage_crashed", flow=self.name, stage=stage, restart_in=round(delay, 3), error=repr(exc))

    # -- consumer stage -------------------------------------------------------------------------

    async def _consume(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._apply_back_pressure()
            if await self._waited_for_projector():
                continue
            batch = await self.source.batch(self.settings.batch_max, self.settings.poll_timeout)
            self.metrics.polled()
            if batch.records:
                self.metrics.records.inc(len(batch.records))
                self._enqueue(batch)
                self._idle.clear()
                self._batch_ready.set()
            committable = self.tracker.committable()
            if committable != self._committed:
                await self.source.commit(committable)
                self._committed = committable

    def _enqueue(self, batch: Batch) -> None:
        # While the projector works on the head batch, later records join the last waiting
        # batch (up to batch_max): a few big transactions rather than a queue of small ones,
        # and the partitions pause only under a real backlog.
        if len(self._batches) >= 2:
            generation, last = self._batches[-1]
            if (
                generation == self.generation
                and len(last.records) + len(batch.records) <= self.settings.batch_max
            ):
                self._batches[-1] = (generation, last.joined(batch))
                return
        self._batches.append((self.generation, batch))

    def _projector_backlog(self) -> float | None:
        """For how long the projector's queue has been full (s), or None when it is not."""
        if len(self._batches) < _PROJECTOR_QUEUE:
            self._full_since = None
            return None
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        return now - self._full_since

    async def _waited_for_projector(self) -> bool:
        """While the projector's queue is full, and not for long, wait for it to take a batch
        instead of fetching more; True if it waited."""
        backlog = self._projector_backlog()
        if backlog is None or backlog >= self.settings.backlog_pause_after:
            return False
        self._batch_taken.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._batch_taken.wait(), self.settings.backlog_pause_after - backlog)
        return True

    async def _apply_back_pressure(self) -> None:
        wanted: set[int] = set()
        backlog = self._projector_backlog()
        if backlog is not None and backlog >= self.settings.backlog_pause_after:
            wanted = wanted.union(*(batch.partitions for _, batch in self._batches))
        for dispatcher in self.dispatchers.values():
            if dispatcher.full() or (
                dispatcher.feeding_partitions() & self.paused and not dispatcher.drained()
            ):
                wanted |= dispatcher.feeding_partitions()
        if wanted - self.paused:
            await self.source.pause(wanted - self.paused)
            log.info("partitions_paused", partitions=sorted(wanted - self.paused))
        if self.paused - wanted:
            await self.source.resume(self.paused - wanted)
            log.info("partitions_resumed", partitions=sorted(self.paused - wanted))
        self.paused = wanted
        self.metrics.paused.labels(self.name).set(len(wanted))

    async def _revoked(self, partitions: list[int], lost: bool) -> dict[int, int]:
        """Drop everything in flight for ``partitions``; the finished offsets to commit."""
        self.generation += 1
        gone = set(partitions)
        for partition in gone:
            self._reset_at[partition] = self.generation
        finished = {p: o for p, o in self.tracker.committable().items() if p in gone}
        # Waiting batches lose the revoked partitions' records; the head may be under way in the
        # projector, which checks each record's generation itself.
        kept = deque(self._batches)
        head = [kept.popleft()] if kept else []
        waiting = [(g, b.without(gone)) for g, b in kept]
        self._batches = deque([*head, *((g, b) for g, b in waiting if b.records)])
        if not self._batches:
            self._idle.set()
        for dispatcher in self.dispatchers.values():
            dispatcher.drop(gone)
        self.tracker.forget(partitions)
        self._refused_sent = {place for place in self._refused_sent if place[0] not in gone}
        self.paused -= gone
        log.info("flow_reset", flow=self.name, partitions=partitions, lost=lost, generation=self.generation)
        return {} if lost else finished

    def _current(self, partition: int, generation: int) -> bool:
        """Whether work of ``generation`` on ``partition`` still belongs to this flow."""
        return generation >= self._reset_at.get(partition, 0)

    def _still_mine(self, consumed: list[Consumed], generation: int) -> list[Consumed]:
        """``consumed`` less the records of partitions revoked since ``generation``."""
        gone = {p for p, reset in self._reset_at.items() if reset > generation}
        return [c for c in consumed if c.record.partition not in gone] if gone else consumed

    # -- projector stage ------------------------------------------------------------------------

    async def _project_forever(self) -> None:
        while True:
            while not self._batches:
                self._idle.set()
                self._batch_ready.clear()
                await self._batch_ready.wait()
            generation, batch = self._batches[0]
            await self._project(generation, batch)
            if self._batches and self._batches[0][1] is batch:
                self._batches.popleft()
                self._batch_taken.set()

    async def _project(self, generation: int, batch: Batch) -> None:
        mine = self._still_mine(batch.records, generation)
        if not mine:
            return  # all revoked while waiting: the new owners take them
        records = [consumed.record for consumed in mine]
        poison = [
            (consumed, consumed.malformed)
            for consumed in mine
            if consumed.malformed is not None and self.reports_poison
        ]
        # All of a batch's poison records go to the dead-letter topic at once, and all are
        # acknowledged before the positions move past them: one round trip, not one each.
        await asyncio.gather(*(self.dead_letters.send(c.message, "decode", reason) for c, reason in poison))
        for consumed, reason in poison:
            self.metrics.dead_letters.labels("decode").inc()
            log.warning(
                "poison_record",
                partition=consumed.record.partition,
                offset=consumed.record.offset,
                reason=reason,
            )
        self.metrics.batch_size.labels(self.name).observe(len(records))
        with self.metrics.batch_seconds.labels(self.name).time():
            changes = await self._apply(mine)
        self.metrics.replayed.inc(changes.replayed)
        for status, count in Counter(outcome.status for outcome in changes.outcomes).items():
            self.metrics.outcomes.labels(status).inc(count)
        # Partitions revoked while projecting: their new owner delivers these.
        mine = self._still_mine(mine, generation)
        if not self.dispatchers:
            for consumed in mine:
                self.tracker.add(consumed.record.partition, consumed.record.offset, 0)
            return
        deliverable = {(r.partition, r.offset) for r in changes.deliverable}
        for consumed in mine:
            record, event = consumed.record, consumed.record.event
            wanting = [] if event is None or (record.partition, record.offset) not in deliverable else [
                dispatcher
                for dispatcher in self.dispatchers.values()
                if event.event_type in dispatcher.endpoint.event_types
            ]  # fmt: skip
            self.tracker.add(record.partition, record.offset, len(wanting))
            for dispatcher in wanting:
                assert event is not None
                body = consumed.message.value() or b""
                dispatcher.submit(
                    Job(record.partition, record.offset, event.room_id, str(event.event_id), body, generation)
                )

    async def _apply(self, consumed: list[Consumed]) -> Changes:
        """Apply ``consumed`` in order, isolating any record the store refuses for good.

        A refused batch is split in two, each half applied in turn (so in log order),
        until the refused record stands alone: it goes to the dead-letter topic, its
        event is recorded as rejected with the store's reason, and the rest applies.
        Errors a retry may cure are not caught here: the projector's supervisor
        retries the batch, and nothing is dead-lettered.
        """
        try:
            return await self.store.apply([c.record for c in consumed])
        except StoreRefused as refused:
            if len(consumed) > 1:
                middle = len(consumed) // 2
                first = await self._apply(consumed[:middle])
                return first.then(await self._apply(consumed[middle:]))
            record = consumed[0].record
            place = (record.partition, record.offset)
            if place not in self._refused_sent:
                await self.dead_letters.send(consumed[0].message, "store", refused.reason)
                self._refused_sent.add(place)
                self.metrics.dead_letters.labels("store").inc()
                log.warning(
                    "record_refused", partition=record.partition, offset=record.offset, reason=refused.reason
                )
            try:
                return await self.store.apply([record], {place: refused.reason})
            except StoreRefused as again:
                # Not the record: the store refuses even its rejection. A crash, retried with backoff.
                raise RuntimeError(f"the read store refused recording a rejection: {again.reason}") from again

    def _finished(self, job: Job) -> None:
        if self._current(job.partition, job.generation):
            self.tracker.done(job.partition, job.offset)

    async def _dead_letter(self, job: Job, endpoint: Endpoint, reason: str, attempts: list[Attempt]) -> None:
        await self.dead_letters.send_failed_delivery(
            partition=job.partition, offset=job.offset, room_id=job.room_id, event_id=job.event_id,
            event=job.body, endpoint=endpoint, reason=reason, attempts=attempts,
        )  # fmt: skip
        self.metrics.dead_letters.labels("delivery").inc()

    def _delivered(self, endpoint: str) -> Callable[[str, float], None]:
        def observe(outcome: str, seconds: float) -> None:
            self.metrics.deliveries.labels(endpoint, outcome).inc()
            self.metrics.delivery_seconds.labels(endpoint).observe(seconds)
            dispatcher = self.dispatchers[endpoint]
            self.metrics.buffered.labels(endpoint).set(dispatcher.size)
            self.metrics.blocked_rooms.labels(endpoint).set(len(dispatcher.blocked_rooms()))
            if self.watch is not None:
                self.watch.delivered(endpoint, outcome)

        return observe


class _Stopped(Exception):
    """The consumer stage was asked to stop: wind the other stages down."""
