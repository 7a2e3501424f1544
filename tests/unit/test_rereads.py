"""Reading a parked room's events again from the log: one partition, one room, only what may be delivered."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import UUID

from domain import Event, MessageCreated, MessageUpdated
from forwarder.applied import AppliedGate
from forwarder.jobs import Job
from forwarder.rereads import LogRereads
from forwarder.source import Consumed, RevokeHandler
from forwarder.tracker import OffsetTracker
from tests.unit.fakes import FakeSource, MemoryReads, MemoryStore, batch, consumed, poison
from webhooks.endpoints import Endpoint

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def created(n: int, room: str) -> MessageCreated:
    return MessageCreated(UUID(int=n), room, UUID(int=n), "ann", f"message {n}", T0)


def edited(n: int, room: str, message: int) -> MessageUpdated:
    return MessageUpdated(UUID(int=n), room, UUID(int=message), "ann", f"edit {n}", T0)


class Log:
    """One partition's log sources as the re-reads open them: each remembered, with where it started."""

    def __init__(self) -> None:
        self.opened: list[tuple[int, int, FakeSource]] = []
        self.started: list[RevokeHandler] = []

    def __call__(self, partition: int, start: int) -> FakeSource:
        source = FakeSource()
        original = source.start

        async def starting(revoked: RevokeHandler) -> None:
            self.started.append(revoked)
            await original(revoked)

        source.start = starting  # type: ignore[method-assign]
        self.opened.append((partition, start, source))
        return source


def setup(
    event_types: list[str] | None = None,
) -> tuple[Log, MemoryStore, OffsetTracker, LogRereads]:
    config: dict[str, object] = {"name": "e", "url": "http://x.test/", "secret": SECRET}
    if event_types is not None:
        config["event_types"] = event_types
    log, store, tracker = Log(), MemoryStore(), OffsetTracker()
    rereads = LogRereads(log, AppliedGate(MemoryReads(store)), tracker, Endpoint.model_validate(config), 0.01)
    return log, store, tracker, rereads


def job(c: Consumed, event: Event) -> Job:
    """The job a re-read makes of ``c``: its pin stands for it in the offset tracker."""
    body = c.message.value() or b""
    return Job(c.record.partition, c.record.offset, event.room_id, str(event.event_id), body, 0, reread=True)


async def test_a_room_is_read_again_from_where_it_parked_keeping_its_applied_events_of_wanted_types() -> None:
    log, store, _tracker, rereads = setup(event_types=["MessageCreated"])
    a3, b4, a5, a7, a8 = created(3, "a"), created(4, "b"), created(5, "a"), created(7, "a"), created(8, "a")
    a6 = edited(6, "a", message=5)  # applied, but not of the endpoint's types
    again = MessageCreated(UUID(int=9), "a", a3.message_id, "ann", "again", T0)  # a repeated create: rejected
    records = [
        consumed(0, 2, created(2, "a")),  # before where the room was parked
        consumed(0, 3, a3),
        consumed(0, 4, b4),  # another room
        consumed(0, 5, a5),
        consumed(0, 6, a6),
        poison(0, 7, b"{nope"),
        consumed(0, 8, again),
        consumed(0, 9, a7),
        consumed(1, 10, a8),  # another partition
    ]
    await store.apply([c.record for c in records])
    reader = rereads.open("a", 0, 3)
    assert log.opened == []  # nothing is opened before it is read
    assert await reader.next(100) == ([], 3)  # nothing fetched yet
    [(partition, start, source)] = log.opened
    assert (partition, start) == (0, 3)
    assert await log.started[0]([0], False) == {}  # outside any group, nothing is ever revoked
    source.push(batch(*records))
    jobs, position = await reader.next(100)
    assert jobs == [job(records[1], a3), job(records[3], a5), job(records[7], a7)]
    assert position == 10  # past every record of the partition read, whatever its room
    await reader.close()
    assert source.closed


async def test_an_empty_fetch_keeps_the_position_and_close_before_any_read_opens_nothing() -> None:
    log, _store, _tracker, rereads = setup()
    reader = rereads.open("a", 0, 5)
    await reader.close()
    assert log.opened == []
    reader = rereads.open("a", 0, 5)
    assert await reader.next(10) == ([], 5)
    assert await reader.next(10) == ([], 5)
    [(_, _, source)] = log.opened  # opened once, kept for the next reads
    await reader.close()
    assert source.closed


async def test_records_ahead_of_the_projection_wait_for_it() -> None:
    """A re-read may reach records the projection has not applied yet: it waits for the projection, as
    the endpoint's flow does, and delivers only what it applied."""
    log, store, _tracker, rereads = setup()
    a0, a1 = consumed(0, 0, created(0, "a")), consumed(0, 1, created(1, "a"))
    reader = rereads.open("a", 0, 0)
    await reader.next(10)
    log.opened[0][2].push(batch(a0, a1))
    reading = asyncio.create_task(reader.next(10))
    await store.apply([a0.record])
    await asyncio.sleep(0)
    assert not reading.done()
    await store.apply([a1.record])
    jobs, position = await asyncio.wait_for(reading, 5)
    assert [j.offset for j in jobs] == [0, 1]
    assert position == 2
    await reader.close()


async def test_the_flow_has_passed_what_it_handed_over() -> None:
    _log, _store, tracker, rereads = setup()
    assert rereads.passed(0) == 0
    tracker.add(0, 4, 1)
    tracker.add(0, 5, 0)
    assert (rereads.passed(0), rereads.passed(1)) == (6, 0)  # offset 4, unfinished, is handed over too
