"""A blocked room's backlog past what memory holds: left in the log, and read again once unblocked.

Past a buffer's worth held in blocked rooms, a blocked room's further events
are *parked*: not kept, left in the log, and uncommitted (its first parked
event, the room's *pin*, stays unfinished). Once the room is unblocked, its
parked events are read again from the log (``Rereads``, ``forwarder.rereads``
in production), a window at a time, until the re-read reaches where the flow
is; from there the room takes its events from the flow again. Memory stays
bounded however long a room is blocked, and nothing else waits for it.

``ParkedRooms`` works on the dispatcher's queues only through ``RoomQueues``,
and reports finished records through the dispatcher's ``DispatchReport``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from forwarder.jobs import DispatchReport, Job, surface
from webhooks.endpoints import Endpoint

log = structlog.get_logger()


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


class RoomQueues(Protocol):
    """The dispatcher's room queues, as parked rooms use them."""

    @property
    def endpoint(self) -> Endpoint: ...

    def enqueue(self, job: Job) -> None:
        """Queue ``job`` behind its room's events in memory."""
        ...

    def queued(self, room: str) -> int:
        """How many of ``room``'s events are in memory."""
        ...

    def is_blocked(self, room: str) -> bool: ...


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


class ParkedRooms:
    """One dispatcher's parked rooms, and the re-reads that bring their events back."""

    def __init__(self, rereads: Rereads, queues: RoomQueues, report: DispatchReport) -> None:
        self._rereads = rereads
        self._queues = queues
        self._report = report
        self.rooms: dict[str, Parked] = {}
        self._failure: asyncio.Future[None] | None = None  # while the dispatcher runs

    def takes(self, job: Job, overflowing: bool) -> bool:
        """Whether ``job`` stays out of memory: the re-read brings (or brought) it, or its room parks now.

        ``overflowing``: its room is blocked with a buffer's worth held in blocked rooms.
        """
        room = job.room_id
        parked = self.rooms.get(room)
        if parked is not None and parked.partition != job.partition:
            return False  # a room in two partitions: only once the topic gained some
        if parked is not None:
            if parked.reading or job.offset < parked.position:
                self._report.finished(
                    job
                )  # the re-read brings it (or brought it); the pin keeps it uncommitted
                return True
            if parked.pin is None:
                del self.rooms[room]
                parked = None
        if not overflowing:
            return False
        if parked is None:
            self.rooms[room] = Parked(job.partition, job.offset, pin=job)
            log.info("room_parked", endpoint=self._queues.endpoint.name, room=room, offset=job.offset)
        else:  # its last re-read is still being delivered: that pin holds this event too
            parked.reading, parked.position = True, job.offset
            self._report.finished(job)
        return True

    def pinned(self) -> set[str]:
        """Rooms whose events are (partly) left in the log until they are read again."""
        return {room for room, parked in self.rooms.items() if parked.pin is not None}

    def completed(self, job: Job) -> None:
        """``job``, of a parked room, is sent, dead-lettered or skipped."""
        parked = self.rooms[job.room_id]
        if job.reread:
            parked.rereads -= 1
            self._release(job.room_id, parked)
        else:
            self._report.finished(job)
        parked.wake.set()

    def unblocked(self, room: str) -> None:
        parked = self.rooms.get(room)
        if parked is not None:
            parked.wake.set()
            self._refill_later(room)

    def drop(self, partitions: set[int]) -> None:
        """Forget the parked rooms of ``partitions`` (revoked in a rebalance)."""
        for room, parked in list(self.rooms.items()):
            if parked.partition in partitions:
                if parked.task is not None:
                    parked.task.cancel()
                del self.rooms[room]

    def start(self, failure: asyncio.Future[None]) -> None:
        """The dispatcher runs: read its parked rooms again, a re-read's crash surfacing on ``failure``."""
        self._failure = failure
        for room in self.rooms:
            self._refill_later(room)

    def stop(self) -> None:
        """The dispatcher stopped: so do the re-reads, until it runs again."""
        self._failure = None
        for parked in self.rooms.values():
            if parked.task is not None:
                parked.task.cancel()
                parked.task = None

    def _window(self) -> int:
        """How many of a parked room's events are read back into memory at a time."""
        return max(1, self._queues.endpoint.buffer // 2)

    def _refill_later(self, room: str) -> None:
        """Start reading ``room``'s parked events again, if it has some and can take them."""
        parked = self.rooms.get(room)
        if (
            parked is None
            or not parked.reading
            or parked.task is not None
            or self._queues.is_blocked(room)
            or self._failure is None
        ):
            return
        failure = self._failure
        parked.task = asyncio.create_task(self._refill(room, parked))
        parked.task.add_done_callback(lambda done: surface(done, failure))

    async def _refill(self, room: str, parked: Parked) -> None:
        queues = self._queues
        reader = self._rereads.open(room, parked.partition, parked.position)
        try:
            while True:
                # Checked right before handing over, with no wait in between: a record the flow
                # hands over after this check is one the room takes from the flow.
                if parked.position >= self._rereads.passed(parked.partition):
                    parked.reading = False
                    self._release(room, parked)
                    log.info(
                        "room_caught_up", endpoint=queues.endpoint.name, room=room, offset=parked.position
                    )
                    return
                space = self._window() - queues.queued(room)
                if space <= 0 or queues.is_blocked(room):
                    parked.wake.clear()
                    await parked.wake.wait()
                    continue
                jobs, parked.position = await reader.next(space)
                for job in jobs:
                    queues.enqueue(job)
                parked.rereads += len(jobs)
        finally:
            if parked.task is asyncio.current_task():
                parked.task = None
            await reader.close()

    def _release(self, room: str, parked: Parked) -> None:
        """Finish the pin once the re-read has caught up and every event it read is finished."""
        if parked.pin is not None and not parked.reading and parked.rereads == 0:
            pin, parked.pin = parked.pin, None
            self._report.finished(pin)
