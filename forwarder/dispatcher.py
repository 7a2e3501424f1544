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
Given the log to read them again from, a blocked room's events past a
buffer's worth held are left there (``forwarder.parked``).

What becomes of each job leaves the dispatcher through one port,
``DispatchReport`` (``forwarder.jobs``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from typing import Any

import structlog

from forwarder.jobs import Blocked, DispatchReport, Job, surface
from forwarder.parked import ParkedRooms, Rereads
from webhooks.endpoints import Endpoint
from webhooks.sending import Deliverer, DeliveryFailed

log = structlog.get_logger()

SKIPPED = "skipped by operator"


class Dispatcher:
    def __init__(self, deliverer: Deliverer, report: DispatchReport, rereads: Rereads | None = None) -> None:
        self.deliverer = deliverer
        self._report = report
        self._rooms: dict[str, deque[Job]] = {}
        self._line: deque[str] = deque()  # rooms with work and nothing in flight, in turn order
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._blocked: dict[str, Blocked] = {}
        # Without a log to read them again from, no event is ever left there.
        self._parking = ParkedRooms(rereads, self, report) if rereads is not None else None
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
        parking = self._parking
        if parking is not None:
            blocked = job.room_id in self._blocked
            if (blocked or job.room_id in parking.rooms) and parking.takes(
                job, blocked and self.held >= self.endpoint.buffer
            ):
                return
        self.enqueue(job)

    def enqueue(self, job: Job) -> None:
        """Queue ``job`` behind its room's events in memory, parked or not."""
        queue = self._rooms.setdefault(job.room_id, deque())
        queue.append(job)
        self.size += 1
        if job.room_id in self._blocked:
            self.held += 1
        self._per_partition[job.partition] += 1
        if len(queue) == 1 and job.room_id not in self._busy and job.room_id not in self._blocked:
            self._line.append(job.room_id)
        self._wakeup.set()

    def queued(self, room: str) -> int:
        return len(self._rooms.get(room, ()))

    def is_blocked(self, room: str) -> bool:
        return room in self._blocked

    def _flowing(self) -> int:
        # Events held in blocked rooms count only past a buffer of their own (with nowhere
        # to park them, past that they count, and the partitions feeding them pause).
        return self.size - (self.held if self._parking is not None else min(self.held, self.endpoint.buffer))

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
        return self._parking.pinned() if self._parking is not None else set()

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
        if self._parking is not None:
            self._parking.unblocked(room)
        log.info("room_unblocked", endpoint=self.endpoint.name, room=room, event_id=event_id, action=action)
        return True

    def drop(self, partitions: set[int]) -> None:
        """Forget queued and in-flight jobs of ``partitions`` (revoked in a rebalance)."""
        for room, queue in list(self._rooms.items()):
            self._drop_from(room, queue, partitions)
        if self._parking is not None:
            self._parking.drop(partitions)
        self._line = deque(room for room in dict.fromkeys(self._line) if room in self._rooms)
        for room in self._rooms:
            if room not in self._busy and room not in self._line and room not in self._blocked:
                self._line.append(room)
        self._wakeup.set()

    def _drop_from(self, room: str, queue: deque[Job], partitions: set[int]) -> None:
        """Take ``partitions``' jobs out of ``room``'s queue, cancelling its head's delivery if it goes."""
        kept = deque(job for job in queue if job.partition not in partitions)
        if len(kept) == len(queue):
            return
        for job in queue:
            if job.partition in partitions:
                self._per_partition[job.partition] -= 1
        self.size -= len(queue) - len(kept)
        if queue[0].partition in partitions and room in self._busy:
            self._busy.pop(room).cancel()
        if self._blocked.pop(room, None) is not None:
            self.held -= len(queue)
        if kept:
            self._rooms[room] = kept
        else:
            del self._rooms[room]

    async def run(self) -> None:
        """Deliver until cancelled; a crash leaves the queues for the next run."""
        # A previous run's in-flight jobs were cancelled with it: their rooms take their turn again.
        for room, task in list(self._busy.items()):
            task.cancel()
            del self._busy[room]
            if room in self._rooms and room not in self._blocked:
                self._line.appendleft(room)
        failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._parking is not None:
            self._parking.start(failure)
        try:
            while True:
                while self._line and len(self._busy) < self.endpoint.max_in_flight:
                    room = self._line.popleft()
                    job = self._rooms[room][0]
                    task = asyncio.create_task(self._deliver(job))
                    task.add_done_callback(lambda done: surface(done, failure))
                    self._busy[room] = task
                self._wakeup.clear()
                waiter: asyncio.Future[Any] = asyncio.ensure_future(self._wakeup.wait())
                await asyncio.wait({waiter, failure}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if failure.done():
                    failure.result()
        finally:
            if self._parking is not None:
                self._parking.stop()
            for task in self._busy.values():
                task.cancel()

    async def _deliver(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self.deliverer.deliver(job.event_id, job.body, job.traceparent, job.tracestate)
            self._report.ended(job, "delivered", loop.time() - started)
        except DeliveryFailed as failed:
            if self.endpoint.on_failure == "block":
                blocked = Blocked(job, failed.reason, failed.attempts, time.time())
                self._blocked[job.room_id] = blocked
                self.held += len(self._rooms[job.room_id])
                self._busy.pop(job.room_id, None)
                self._report.blocked(blocked, loop.time() - started)
                log.error(
                    "room_blocked", endpoint=self.endpoint.name, room=job.room_id,
                    event_id=job.event_id, reason=failed.reason,
                )  # fmt: skip
                return
            await self._report.dead_letter(job, self.endpoint, failed.reason, failed.attempts)
            self._report.ended(job, "dead_lettered", loop.time() - started)
            log.warning(
                "delivery_dead_lettered", endpoint=self.endpoint.name, room=job.room_id,
                event_id=job.event_id, reason=failed.reason,
            )  # fmt: skip
        self._complete(job)

    async def _skip(self, blocked: Blocked) -> None:
        job = blocked.job
        await self._report.dead_letter(job, self.endpoint, SKIPPED, blocked.attempts)
        self._report.ended(job, "skipped", 0.0)
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
        parking = self._parking
        if parking is not None and job.room_id in parking.rooms:
            parking.completed(job)
        elif not job.reread:
            self._report.finished(job)
        self._wakeup.set()
