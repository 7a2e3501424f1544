"""What an endpoint's flow may deliver: the events the projection applied, once it has passed them.

An endpoint's flow reads the log in its own consumer group; in place of the
projection writer it is given ``AppliedEvents``, which waits until the
projection's position has passed a batch, then asks the read store once which
of the batch's events were applied. Rejected events and repeated creates are
never delivered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kernel.position import Position
from read_store.projection import Changes, Record
from read_store.reader import ReadStore


class AppliedEvents:
    """A ``ProjectionWriter`` for a delivery flow: it writes nothing, it says what is deliverable."""

    def __init__(self, reads: ReadStore, wait: float = 1.0) -> None:
        self.reads = reads
        self._wait = wait

    async def apply(
        self, records: Sequence[Record], refused: Mapping[tuple[int, int], str] | None = None
    ) -> Changes:
        last: dict[int, int] = {}
        for record in records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        for partition, offset in last.items():
            # However long the projection takes: this stage holds back only this endpoint.
            while not await self.reads.wait_for(Position(partition, offset), self._wait):
                pass
        events = [record.event for record in records if record.event is not None]
        applied = await self.reads.applied([str(event.event_id) for event in events])
        return Changes(
            deliverable=[r for r in records if r.event is not None and str(r.event.event_id) in applied]
        )

    async def ping(self) -> None:
        """Raise unless the read store answers."""
        await self.reads.ping()
