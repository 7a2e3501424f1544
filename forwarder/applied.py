"""The applied gate: which of a batch's events an endpoint may deliver.

An endpoint's flow reads the log in its own consumer group, so it may be
ahead of the projection. Before a batch is delivered, the gate waits until the
projection's position has passed it, then asks the read store once which of
its events were applied. Rejected events and repeated creates are never
delivered. The gate writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kernel.position import Position
from read_store.projection import Record


class AppliedReads(Protocol):
    """What the gate asks of the read store (``read_store.reader.ReadStore``)."""

    async def wait_for(self, position: Position, timeout: float) -> bool:
        """Wait until the projection has applied ``position``; False if ``timeout`` s pass first."""
        ...

    async def applied(self, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` the projection applied (not rejected, not a repeated create)."""
        ...

    async def ping(self) -> None: ...


class AppliedGate:
    """Holds a batch until the projection has passed it; then says which of its records may go out."""

    def __init__(self, reads: AppliedReads, wait: float = 1.0) -> None:
        self.reads = reads
        self._wait = wait

    async def deliverable(self, records: Sequence[Record]) -> set[tuple[int, int]]:
        """Where (partition, offset) the records of ``records`` whose events were applied are, once the
        projection has passed every one of ``records``."""
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        for partition, offset in last.items():
            # However long the projection takes: this holds back only this endpoint.
            while not await self.reads.wait_for(Position(partition, offset), self._wait):
                pass
        events = [record.event for record in records if record.event is not None]
        applied = await self.reads.applied([str(event.event_id) for event in events])
        return {
            (r.partition, r.offset)
            for r in records
            if r.event is not None and str(r.event.event_id) in applied
        }

    async def ping(self) -> None:
        """Raise unless the read store answers."""
        await self.reads.ping()
