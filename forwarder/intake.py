"""A flow's intake: fetch, queue, back-pressure, revocation and commits, around one role.

A flow is an intake and a role (``BatchHandler``): the projection's
(``forwarder.projecting``) or an endpoint's (``forwarder.delivering``).

- The consumer stage polls without long pauses, so the worker never leaves the
  group. While the role's queue is full it fetches nothing more, and pauses
  the waiting batches' partitions only if it stays full
  (``backlog_pause_after``): a pause drops what librdkafka has fetched ahead
  for them. It also pauses the partitions the role asks it to (those feeding a
  full endpoint buffer) until the role lets them go.
- The role's stage takes the batches in arrival order, one at a time; while it
  works on the head batch, later records join the last waiting batch.
- Offsets are committed only up to the last record the role has finished, in
  arrival order (``forwarder.ledger``).
- On a rebalance, everything in flight for the revoked partitions is dropped
  and what was finished is committed; partitions the flow keeps (cooperative
  rebalancing takes only what changes owner) go on untouched. A partition
  assigned again starts from the committed positions.

The intake is given its source (``forwarder.source``), so all of this runs
without a broker in unit tests. It calls only the source, its role, the ledger
and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import structlog

from forwarder.ledger import Ledger
from forwarder.metrics import ForwarderMetrics
from forwarder.settings import ForwarderSettings
from forwarder.source import Batch, Source
from forwarder.supervisor import BackoffPolicy, BackoffSupervisor, Hooks

log = structlog.get_logger()

_WAITING_BATCHES = 4  # batches waiting for the role before the partitions pause
# Every flow's batch stage is "projector" in logs and metrics, an endpoint's (its wait for the
# projection) too: the name operators have always seen.
_BATCH_STAGE = "projector"


class BatchHandler(Protocol):
    """A flow's role: what it does with each batch, and what it asks of the intake."""

    @property
    def stop_grace(self) -> float:
        """For how long (s), once stopped, the batches already taken in may still be handled."""
        ...

    async def handle(self, batch: Batch, generation: int) -> None:
        """Take ``batch``, fetched in ``generation``, through the role, adding each of its records to the
        ledger; raise to have it handled again."""
        ...

    def to_pause(self, paused: set[int]) -> set[int]:
        """The partitions the role needs paused, given those paused now: a new set, the intake's to keep."""
        ...

    def revoked(self, partitions: set[int]) -> None:
        """Drop the role's work of ``partitions``, revoked."""
        ...

    async def answers(self) -> bool:
        """Whether the store the role needs answers now (a crashed batch stage restarts once it does)."""
        ...

    def stages(self) -> Mapping[str, Callable[[], Awaitable[None]]]:
        """The role's own stages, each run beside the intake's under a supervisor of its own."""
        ...


class Intake:
    """One run of a flow; the worker's supervisor starts a new one if it crashes."""

    def __init__(
        self,
        name: str,
        settings: ForwarderSettings,
        source: Source,
        handler: BatchHandler,
        ledger: Ledger,
        metrics: ForwarderMetrics,
        stage_policy: BackoffPolicy,
    ) -> None:
        self.name = name
        self.settings = settings
        self.source = source
        self.handler = handler
        self.ledger = ledger
        self.metrics = metrics
        self.stage_policy = stage_policy
        self.paused: set[int] = set()
        self._committed: dict[int, int] = {}
        self._batches: deque[tuple[int, Batch]] = deque()
        self._batch_ready = asyncio.Event()
        self._batch_taken = asyncio.Event()  # set each time the role finishes the head batch
        self._full_since: float | None = None  # when the role's queue last became full
        self._idle = asyncio.Event()  # set while the role has nothing to do
        self._idle.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Run the stages until ``stop`` is set or one of them gives up."""
        await self.source.start(self._revoked)
        log.info("flow_started", flow=self.name)
        try:
            async with asyncio.TaskGroup() as stages:
                stages.create_task(self._supervise(_BATCH_STAGE, self._handle_forever, self.handler.answers))
                for name, stage in self.handler.stages().items():
                    stages.create_task(self._supervise(name, stage))
                consuming = stages.create_task(self._consume(stop))
                await consuming
                await self._finish_taken(self.handler.stop_grace)
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            await self.source.commit(self.ledger.tracker.committable())
            await self.source.close()
            log.info("flow_stopped", flow=self.name)

    async def _finish_taken(self, grace: float) -> None:
        """On stop, let the batches already taken in be handled, for at most ``grace`` s."""
        if grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)

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
        # After a store outage the batch stage restarts within about a second of the store's return,
        # not at the end of a backoff that may have grown to its cap.
        await BackoffSupervisor(name, child, self.stage_policy, hooks, recovered=recovered).run()

    def _stage_failed(self, stage: str, exc: BaseException, delay: float) -> None:
        self.metrics.stage_restarts.labels(stage).inc()
        log.error("stage_crashed", flow=self.name, stage=stage, restart_in=round(delay, 3), error=repr(exc))

    # -- consumer stage -------------------------------------------------------------------------

    async def _consume(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._apply_back_pressure()
            if await self._waited_for_handler():
                continue
            batch = await self.source.batch(self.settings.batch_max, self.settings.poll_timeout)
            self.metrics.polled()
            if batch.records:
                self.metrics.records.inc(len(batch.records))
                self._enqueue(batch)
                self._idle.clear()
                self._batch_ready.set()
            committable = self.ledger.tracker.committable()
            if committable != self._committed:
                await self.source.commit(committable)
                self._committed = committable

    def _enqueue(self, batch: Batch) -> None:
        # While the role works on the head batch, later records join the last waiting batch (up
        # to batch_max): a few big transactions rather than a queue of small ones, and the
        # partitions pause only under a real backlog.
        if len(self._batches) >= 2:
            generation, last = self._batches[-1]
            if (
                generation == self.ledger.generation
                and len(last.records) + len(batch.records) <= self.settings.batch_max
            ):
                self._batches[-1] = (generation, last.joined(batch))
                return
        self._batches.append((self.ledger.generation, batch))

    def _backlog(self) -> float | None:
        """For how long the role's queue has been full (s), or None when it is not."""
        if len(self._batches) < _WAITING_BATCHES:
            self._full_since = None
            return None
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        return now - self._full_since

    async def _waited_for_handler(self) -> bool:
        """While the role's queue is full, and not for long, wait for it to take a batch instead of
        fetching more; True if it waited."""
        backlog = self._backlog()
        if backlog is None or backlog >= self.settings.backlog_pause_after:
            return False
        self._batch_taken.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._batch_taken.wait(), self.settings.backlog_pause_after - backlog)
        return True

    async def _apply_back_pressure(self) -> None:
        wanted = self.handler.to_pause(self.paused)
        backlog = self._backlog()
        if backlog is not None and backlog >= self.settings.backlog_pause_after:
            wanted = wanted.union(*(batch.partitions for _, batch in self._batches))
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
        finished = self.ledger.revoke(partitions)
        gone = set(partitions)
        # Waiting batches lose the revoked partitions' records; the head may be under way in the
        # role, which checks each record's generation itself.
        kept = deque(self._batches)
        head = [kept.popleft()] if kept else []
        waiting = [(g, b.without(gone)) for g, b in kept]
        self._batches = deque([*head, *((g, b) for g, b in waiting if b.records)])
        if not self._batches:
            self._idle.set()
        self.handler.revoked(gone)
        self.paused -= gone
        generation = self.ledger.generation
        log.info("flow_reset", flow=self.name, partitions=partitions, lost=lost, generation=generation)
        return {} if lost else finished

    # -- the role's stage -----------------------------------------------------------------------

    async def _handle_forever(self) -> None:
        while True:
            while not self._batches:
                self._idle.set()
                self._batch_ready.clear()
                await self._batch_ready.wait()
            generation, batch = self._batches[0]
            await self.handler.handle(batch, generation)
            if self._batches and self._batches[0][1] is batch:
                self._batches.popleft()
                self._batch_taken.set()


class _Stopped(Exception):
    """The consumer stage was asked to stop: wind the other stages down."""
