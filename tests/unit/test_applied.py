"""The applied gate: a batch is held until the projection has passed it, then only applied events pass."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import pytest

from domain import MessageCreated, MessageUpdated
from forwarder.applied import AppliedGate
from kernel.position import Position
from read_store.projection import Record
from tests.unit.fakes import MemoryReads, MemoryStore, consumed, poison, until

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def created(n: int, room: str = "a", message: int | None = None) -> MessageCreated:
    return MessageCreated(UUID(int=n), room, UUID(int=message if message is not None else n), "ann", "hi", T0)


class CountingReads(MemoryReads):
    """MemoryReads that keeps every question the gate asks."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.waits: list[tuple[Position, float]] = []
        self.asked: list[list[str]] = []

    async def wait_for(self, position: Position, timeout: float) -> bool:
        self.waits.append((position, timeout))
        return await super().wait_for(position, timeout)

    async def applied(self, event_ids: Sequence[str]) -> set[str]:
        self.asked.append(list(event_ids))
        return await super().applied(event_ids)


async def test_a_batch_waits_until_the_projection_has_passed_its_last_record_in_every_partition() -> None:
    store = MemoryStore()
    reads = CountingReads(store)
    gate = AppliedGate(reads, wait=0.01)
    a0, a1, b0 = consumed(0, 0, created(0)), consumed(0, 1, created(1)), consumed(1, 0, created(2, "b"))
    records = [a0.record, a1.record, b0.record]
    passing = asyncio.create_task(gate.deliverable(records))
    await store.apply([a0.record])
    await until(lambda: len(reads.waits) > 3, "the gate asked again after its waits timed out")
    assert not passing.done()  # partition 0 is passed only up to offset 0
    await store.apply([a1.record])
    await until(lambda: [p for p, _ in reads.waits].count(Position(1, 0)) > 2, "waits on partition 1")
    assert not passing.done()  # partition 1 not at all
    await store.apply([b0.record])
    assert await asyncio.wait_for(passing, 5) == {(0, 0), (0, 1), (1, 0)}
    # One wait per partition at a time, for its last record, never longer than ``wait``.
    assert {(position, timeout) for position, timeout in reads.waits} == {
        (Position(0, 1), 0.01),
        (Position(1, 0), 0.01),
    }
    assert reads.asked == [[str(created(n).event_id) for n in range(3)]]


async def test_only_the_events_the_projection_applied_pass() -> None:
    """A repeated create, an edit of no message and a record that is no event are held back; the gate
    asks the store about the events once, and never about the record that is no event."""
    store = MemoryStore()
    reads = CountingReads(store)
    first, again = created(0, message=7), created(1, message=7)  # the same message created twice
    stray = MessageUpdated(UUID(int=2), "a", UUID(int=99), "ann", "edit", T0)
    records: list[Record] = [
        consumed(0, 0, first).record,
        consumed(0, 1, again).record,
        consumed(0, 2, stray).record,
        poison(0, 3, b"{nope").record,
    ]
    await store.apply(records)
    assert await AppliedGate(reads).deliverable(records) == {(0, 0)}
    assert reads.asked == [[str(first.event_id), str(again.event_id), str(stray.event_id)]]


async def test_a_batch_the_projection_has_passed_goes_through_at_once() -> None:
    store = MemoryStore()
    records = [consumed(2, 5, created(0)).record]
    store.snapshot.positions[2] = 9  # applied before: the replay is not applied again
    store.snapshot.seen_event_ids[created(0).event_id] = True
    assert await asyncio.wait_for(AppliedGate(MemoryReads(store)).deliverable(records), 1) == {(2, 5)}


async def test_ping_asks_the_read_store() -> None:
    store = MemoryStore(failures=[ConnectionError("down")])
    gate = AppliedGate(MemoryReads(store))
    with pytest.raises(ConnectionError):
        await gate.ping()
    store.failures.clear()
    await gate.ping()
