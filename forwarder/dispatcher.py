"""One endpoint's dispatcher: ordered per room, concurrent across rooms, rooms served round-robin.

Each room has a FIFO of jobs; at most one job per room is in flight, so event
n+1 of a room is not sent before event n succeeded or was dead-lettered. Rooms
with work wait in a round-robin line, so a busy room goes to the back after
each event and cannot starve quiet ones. The queues outlive the worker: when
the supervisor restarts a crashed worker, it carries on where it was.

In ``block`` mode a room whose head event failed for good waits for an
operator (``unblock``: retry it now, or skip it to the dead-letter topic).
Its queue is held apart, so the other rooms of its partition keep flowing:
events held in blocked rooms do not count against the endpoint's buffer.
Past a buffer's worth held, a blocked room's further events are *parked*:
not kept, left in the log, and uncommitted (its first parked event stays
unfinished). Once the room is unblocked, its parked events are read again
from the log, a window at a time, until the re-read reaches where the flow
is; from there the room takes its events from the flow again. Memory stays
bounded however long a room is blocked, and nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from webhooks.endpoints import Endpoint
from webhooks.sending import Attempt, Deliverer, DeliveryFailed

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Job:
    partition: int
    offset: int
    room_id: str
    event_id: str
    body: bytes  # the event envelope exactly as it is in the log
    generation: int  # the assignment it belongs to; stale after a rebalance
    reread: bool = False  # read again from the log for a parked room: its pin stands for it


@dataclass(frozen=True, slots=True)
class Blocked:
    """A room held by its head event, which failed for good."""

    job: Job
    reason: str
    attempts: list[Attempt]
    since: float  # time.time() when it blocked


@dataclass(slots=True)
class Parked:
    """A room whose events past what memory holds are left in the log, to be read again."""

    partition: int
    position: int  # the next offset of ``partition`` to read the room's events from
    pin: Job | None  # its first event not kept: unfinished, so uncommitted, until the re-read is delivered
    reading: bool = True  # the flow's new events of the room are left to the re-read
    rereads: int = 0  # re-read events queued or in flight
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class RoomReader(Protocol):
    """One room's events in one partition of the log, from an offset on."""

    async def next(self, max_records: int) -> tuple[list[Job], int]:
        """The room's deliverable events in the next ``max_records`` records, and the offset after them."""
        ...

    async def close(self) -> None: ...


class Rereads(Protocol):
    """Where a parked room's events are read again: the log, and how far the flow has got in it."""

    def passed(self, partition: int) -> int:
        """The offset of ``partition`` before which the flow has handed every record to the dispatcher."""
        ...

    def open(self, room: str, partition: int, start: int) -> RoomReader: ...


Finished = Callable[[Job], None]
DeadLetter = Callable[[Job, Endpoint, str, list[Attempt]], Awaitable[None]]
SKIPPED = "skipped by operator"


class DispatchWatch(Protocol):
    """Told when a room blocks, when a room's head event is finished, and each call's outcome."""

    def blocked(self, endpoint: str, room: Blocked) -> None: ...

    def finished(self, endpoint: str, job: Job) -> None: ...

    def delivered(self, endpoint: str, outcome: str) -> None: ...


class _Unwatched:
    def blocked(self, endpoint: str, room: Blocked) -> None:
        pass

    def finished(self, endpoint: str, job: Job) -> None:
        pass

    def delivered(self, endpoint: str, outcome: str) -> None:
        pass


class Dispatcher:
    def __init__(
        self,
        deliverer: Deliverer,
        finished: Finished,
        dead_letter: DeadLetter,
        on_delivered: Callable[[str, float], None] = lambda _outcome, _seconds: None,
        watch: DispatchWatch | None = None,
        rereads: Rereads | None = None,
    ) -> None:
        self.deliverer = deliverer
        self._finished = finished
        self._dead_letter = dead_letter
        self._on_delivered = on_delivered
        self._watch = watch or _Unwatched()
        self._rooms: dict[str, deque[Job]] = {}
        self._line: deque[str] = deque()  # rooms with work and nothing in flight, in turn order
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._blocked: dict[str, Blocked] = {}
        self._rereads = rereads
        self._parked: dict[str, Parked] = {}
        self._failure: asyncio.Future[None] | None = None
        self._per_partition: Counter[int] = Counter()
        self._wakeup = asyncio.Event()
        self.size = 0
        self.held = 0  # of ``size``, the events waiting in blocked rooms

    @property
    def endpoint(self) -> Endpoint:
        return self.deliverer.endpoint

    def reconfigure(self, endpoint: Endpoint) -> None:
        """Go on under ``endpoint``'s definition: nothing in flight is dropped; calls from the
        next attempt use its URL and secrets, and its window and buffer apply at once."""
        self.deliverer.reconfigure(endpoint)
        self._wakeup.set()

    def submit(self, job: Job) -> None:
        """Queue ``job`` behind the room's earlier events (or leave it in the log, if the room is parked)."""
        room = job.room_id
        parked = self._parked.get(room)
        if parked is not None and parked.partition != job.partition:
            self._enqueue(job)  # a room in two partitions: only once the topic gained some
            return
        if parked is not None:
            if parked.reading or job.offset < parked.position:
                self._finished(job)  # the re-read brings it (or brought it); the pin keeps it uncommitted
                return
            if parked.pin is None:
                del self._parked[room]
                parked = None
        if self._rereads is not None and room in self._blocked and self.held >= self.endpoint.buffer:
            self._park(job, parked)
            return
        self._enqueue(job)

    def _park(self, job: Job, parked: Parked | None) -> None:
        if parked is None:
            self._parked[job.room_id] = Parked(job.partition, job.offset, pin=job)
            log.info("room_parked", endpoint=self.endpoint.name, room=job.room_id, offset=job.offset)
        else:  # its last re-read is still being delivered: that pin holds this event too
            parked.reading, parked.position = True, job.offset
            self._finished(job)

    def _enqueue(self, job: Job) -> None:
        queue = self._rooms.setdefault(job.room_id, deque())
        queue.append(job)
        self.size += 1
        if job.room_id in self._blocked:
            self.held += 1
        self._per_partition[job.partition] += 1
        if len(queue) == 1 and job.room_id not in self._busy and job.room_id not in self._blocked:
            self._line.append(job.room_id)
        self._wakeup.set()

    def _flowing(self) -> int:
        # Events held in blocked rooms count only past a buffer of their own (with nowhere
        # to park them, past that they count, and the partitions feeding them pause).
        return self.size - (self.held if self._rereads is not None else min(self.held, self.endpoint.buffer))

    def full(self) -> bool:
        return self._flowing() >= self.endpoint.buffer

    def drained(self) -> bool:
        return self._flowing() <= self.endpoint.buffer // 2

    def feeding_partitions(self) -> set[int]:
        """Partitions with events waiting here."""
        return {partition for partition, count in self._per_partition.items() if count > 0}

    def blocked_rooms(self) -> dict[str, Blocked]:
        return dict(self._blocked)

    def parked_rooms(self) -> set[str]:
        """Rooms whose events are (partly) left in the log until they are read again."""
        return {room for room, parked in self._parked.items() if parked.pin is not None}

    def unblock(self, room: str, event_id: str, action: str) -> bool:
        """Retry or skip ``room``'s head event if it is blocked on ``event_id``; False if it is not."""
        blocked = self._blocked.get(room)
        if blocked is None or blocked.job.event_id != event_id:
            return False
        del self._blocked[room]
        self.held -= len(self._rooms[room])
        if action == "skip":
            task = asyncio.create_task(self._skip(blocked))
            self._busy[room] = task
        else:
            self._line.appendleft(room)
        self._wakeup.set()
        parked = self._parked.get(room)
        if parked is not None:
            parked.wake.set()
            self._refill_later(room)
        log.info("room_unblocked", endpoint=self.endpoint.name, room=room, event_id=event_id, action=action)
        return True

    def drop(self, partitions: set[int]) -> None:
        """Forget queued and in-flight jobs of ``partitions`` (revoked in a rebalance)."""
        for room, queue in list(self._rooms.items()):
            kept = deque(job for job in queue if job.partition not in partitions)
            removed = len(queue) - len(kept)
            if not removed:
                continue
            head_dropped = queue[0].partition in partitions
            for job in queue:
                if job.partition in partitions:
                    self._per_partition[job.partition] -= 1
            self.size -= removed
            if head_dropped and room in self._busy:
                self._busy.pop(room).cancel()
            if self._blocked.pop(room, None) is not None:
                self.held -= len(queue)
            if kept:
                self._rooms[room] = kept
            else:
                del self._rooms[room]
        for room, parked in list(self._parked.items()):
            if parked.partition in partitions:
                if parked.task is not None:
                    parked.task.cancel()
                del self._parked[room]
        self._line = deque(room for room in dict.fromkeys(self._line) if room in self._rooms)
        for room in self._rooms:
            if room not in self._busy and room not in self._line and room not in self._blocked:
                self._line.append(room)
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until cancelled; a crash leaves the queues for the next run."""
        # A previous run's in-flight jobs were cancelled with it: their rooms take their turn again.
        for room, task in list(self._busy.items()):
            task.cancel()
            del self._busy[room]
            if room in self._rooms and room not in self._blocked:
                self._line.appendleft(room)
        failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._failure = failure
        for room in self._parked:
            self._refill_later(room)
        try:
            while True:
                while self._line and len(self._busy) < self.endpoint.max_in_flight:
                    room = self._line.popleft()
                    job = self._rooms[room][0]
                    task = asyncio.create_task(self._deliver(job))
                    task.add_done_callback(lambda done: _report(done, failure))
                    self._busy[room] = task
                self._wakeup.clear()
                waiter: asyncio.Future[Any] = asyncio.ensure_future(self._wakeup.wait())
                await asyncio.wait({waiter, failure}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if failure.done():
                    failure.result()
        finally:
            self._failure = None
            for task in self._busy.values():
                task.cancel()
            for parked in self._parked.values():
                if parked.task is not None:
                    parked.task.cancel()
                    parked.task = None

    async def _deliver(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self.deliverer.deliver(job.event_id, job.body)
            self._on_delivered("delivered", loop.time() - started)
        except DeliveryFailed as failed:
            if self.endpoint.on_failure == "block":
                blocked = Blocked(job, failed.reason, failed.attempts, time.time())
                self._blocked[job.room_id] = blocked
                self.held += len(self._rooms[job.room_id])
                self._busy.pop(job.room_id, None)
                self._on_delivered("blocked", loop.time() - started)
                self._watch.blocked(self.endpoint.name, blocked)
                log.error(
                    "room_blocked", endpoint=self.endpoint.name, room=job.room_id,
                    event_id=job.event_id, reason=failed.reason,
                )  # fmt: skip
                return
            await self._dead_letter(job, self.endpoint, failed.reason, failed.attempts)
            self._on_delivered("dead_lettered", loop.time() - started)
            log.warning(
                "delivery_dead_lettered", endpoint=self.endpoint.name, room=job.room_id,
                event_id=job.event_id, reason=failed.reason,
            )  # fmt: skip
        self._complete(job)

    async def _skip(self, blocked: Blocked) -> None:
        job = blocked.job
        await self._dead_letter(job, self.endpoint, SKIPPED, blocked.attempts)
        self._on_delivered("skipped", 0.0)
        self._complete(job)

    def _complete(self, job: Job) -> None:
        self._busy.pop(job.room_id, None)
        queue = self._rooms.get(job.room_id)
        if not queue or queue[0] is not job:
            return  # dropped by a rebalance meanwhile
        queue.popleft()
        self.size -= 1
        self._per_partition[job.partition] -= 1
        if queue:
            self._line.append(job.room_id)
        else:
            del self._rooms[job.room_id]
        parked = self._parked.get(job.room_id)
        if job.reread and parked is not None:
            parked.rereads -= 1
            self._release(job.room_id, parked)
        elif not job.reread:
            self._finished(job)
        if parked is not None:
            parked.wake.set()
        self._watch.finished(self.endpoint.name, job)
        self._wakeup.set()

    # -- parked rooms ---------------------------------------------------------------------------

    def _window(self) -> int:
        """How many of a parked room's events are read back into memory at a time."""
        return max(1, self.endpoint.buffer // 2)

    def _refill_later(self, room: str) -> None:
        """Start reading ``room``'s parked events again, if it has some and can take them."""
        parked = self._parked.get(room)
        if (
            parked is None
            or not parked.reading
            or parked.task is not None
            or room in self._blocked
            or self._failure is None
        ):
            return
        failure = self._failure
        parked.task = asyncio.create_task(self._refill(room, parked))
        parked.task.add_done_callback(lambda done: _report(done, failure))

    async def _refill(self, room: str, parked: Parked) -> None:
        assert self._rereads is not None
        reader = self._rereads.open(room, parked.partition, parked.position)
        try:
            while True:
                # Checked right before handing over, with no wait in between: a record the flow
                # hands over after this check is one the room takes from the flow.
                if parked.position >= self._rereads.passed(parked.partition):
                    parked.reading = False
                    self._release(room, parked)
                    log.info("room_caught_up", endpoint=self.endpoint.name, room=room, offset=parked.position)
                    return
                space = self._window() - len(self._rooms.get(room, ()))
                if space <= 0 or room in self._blocked:
                    parked.wake.clear()
                    await parked.wake.wait()
                    continue
                jobs, parked.position = await reader.next(space)
                for job in jobs:
                    self._enqueue(job)
                parked.rereads += len(jobs)
        finally:
            if parked.task is asyncio.current_task():
                parked.task = None
            await reader.close()

    def _release(self, room: str, parked: Parked) -> None:
        """Finish the pin once the re-read has caught up and every event it read is finished."""
        if parked.pin is not None and not parked.reading and parked.rereads == 0:
            pin, parked.pin = parked.pin, None
            self._finished(pin)


def _report(task: asyncio.Task[None], failure: asyncio.Future[None]) -> None:
    """Surface a delivery task's unexpected crash to the worker (so its supervisor sees it)."""
    if task.cancelled() or failure.done():
        return
    exc = task.exception()
    if exc is not None:
        failure.set_exception(exc)
