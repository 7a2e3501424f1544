"""Reading a parked room's events again from the log: ``forwarder.parked``'s ``Rereads``.

Each parked room that is unblocked gets a reader of its own: one partition,
assigned outside any group from where the room was parked, so it moves no
group's offsets. It keeps only that room's events, of the endpoint's types,
that the projection applied (asked at the applied gate per batch, as the
endpoint's flow does).
"""

from __future__ import annotations

from collections.abc import Callable

from forwarder.applied import AppliedGate
from forwarder.jobs import Job
from forwarder.source import Source
from forwarder.tracker import OffsetTracker
from kernel import tracing
from webhooks.endpoints import Endpoint

# A source over one partition of the log from an offset, outside any group.
LogOpener = Callable[[int, int], Source]


class LogRereads:
    """The log as parked rooms' ``Rereads``: a reader per room, and how far the flow has got."""

    def __init__(
        self,
        open_log: LogOpener,
        applied: AppliedGate,
        tracker: OffsetTracker,
        endpoint: Endpoint,
        poll_timeout: float,
    ) -> None:
        self.open_log = open_log
        self.applied = applied
        self.tracker = tracker
        self.endpoint = endpoint
        self.poll_timeout = poll_timeout

    def passed(self, partition: int) -> int:
        return self.tracker.end(partition)

    def open(self, room: str, partition: int, start: int) -> RoomLogReader:
        return RoomLogReader(self, room, partition, start)


class RoomLogReader:
    """One room's deliverable events in one partition, read from ``start`` on."""

    def __init__(self, rereads: LogRereads, room: str, partition: int, start: int) -> None:
        self._rereads = rereads
        self._room = room
        self._partition = partition
        self._position = start
        self._source: Source | None = None

    async def next(self, max_records: int) -> tuple[list[Job], int]:
        rereads = self._rereads
        if self._source is None:
            self._source = rereads.open_log(self._partition, self._position)
            await self._source.start(_never_revoked)
        batch = await self._source.batch(max_records, rereads.poll_timeout)
        fresh = [
            c
            for c in batch.records
            if c.record.partition == self._partition and c.record.offset >= self._position
        ]
        if not fresh:
            return [], self._position
        self._position = fresh[-1].record.offset + 1
        wanted = [
            c
            for c in fresh
            if c.record.event is not None
            and c.record.event.room_id == self._room
            and c.record.event.event_type in rereads.endpoint.event_types
        ]
        if not wanted:
            return [], self._position
        # Records the flow has not reached yet wait here, as there, for the projection to pass them.
        deliverable = await rereads.applied.deliverable([c.record for c in wanted])
        jobs = []
        for c in wanted:
            record, event = c.record, c.record.event
            if event is not None and (record.partition, record.offset) in deliverable:
                body = c.message.value() or b""
                traceparent, tracestate = (
                    tracing.trace_headers(c.message.headers()) if tracing.ENABLED else (None, None)
                )
                jobs.append(
                    Job(
                        record.partition,
                        record.offset,
                        self._room,
                        str(event.event_id),
                        body,
                        0,
                        True,
                        traceparent,
                        tracestate,
                    )
                )
        return jobs, self._position

    async def close(self) -> None:
        if self._source is not None:
            await self._source.close()
            self._source = None


async def _never_revoked(_partitions: list[int], _lost: bool) -> dict[int, int]:
    return {}  # outside any group, nothing is ever revoked
