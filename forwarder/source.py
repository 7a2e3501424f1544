"""What the flows read and write, as small protocols: Kafka and the store in production, fakes in tests.

A ``Source`` hands a flow's intake batches of log records (decoded off the
event loop), pauses and resumes partitions for back-pressure, commits
progress, and tells the intake when partitions are revoked. A
``ProjectionWriter`` applies a batch to the read store in one transaction, for
the projecting role.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from kernel.records import RawRecord
from read_store.projection import Changes, Record

# Told which partitions were revoked (and whether lost); answers the offsets safe to commit.
RevokeHandler = Callable[[list[int], bool], Coroutine[Any, Any, dict[int, int]]]


class Consumed(NamedTuple):
    """One fetched record, decoded on the consumer thread, off the event loop (a named tuple: one
    is made per record)."""

    record: Record
    message: RawRecord
    malformed: str | None = None  # why the value is no event: it goes to the dead-letter topic


@dataclass(frozen=True, slots=True)
class Batch:
    """What one fetch returned, and from which partitions."""

    records: list[Consumed]
    partitions: frozenset[int]

    def joined(self, later: Batch) -> Batch:
        return Batch(self.records + later.records, self.partitions | later.partitions)

    def without(self, partitions: set[int]) -> Batch:
        """This batch less the records of ``partitions``."""
        return Batch(
            [c for c in self.records if c.record.partition not in partitions], self.partitions - partitions
        )


class Source(Protocol):
    """The events topic as the flow sees it."""

    async def start(self, revoked: RevokeHandler) -> None:
        """Join and subscribe; ``revoked`` is awaited whenever partitions are taken away."""
        ...

    async def batch(self, max_records: int, timeout: float) -> Batch:
        """Up to ``max_records`` records, waiting at most ``timeout`` s for the first."""
        ...

    async def pause(self, partitions: set[int]) -> None: ...

    async def resume(self, partitions: set[int]) -> None: ...

    async def commit(self, next_offsets: dict[int, int]) -> None:
        """Record that everything before ``next_offsets`` is finished."""
        ...

    async def close(self) -> None: ...


class ProjectionWriter(Protocol):
    """The read store's side that the projection writes (``read_store.writer.ProjectionStore``)."""

    async def apply(
        self, records: Sequence[Record], refused: Mapping[tuple[int, int], str] | None = None
    ) -> Changes:
        """Apply ``records`` in one transaction; raise ``StoreRefused`` if the store will never keep them."""
        ...

    async def ping(self) -> None:
        """Raise unless the store answers now."""
        ...
