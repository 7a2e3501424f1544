"""In-memory stand-ins for what the forwarder's flows read and write: log, store, endpoint, dead letters.

Each fake records what it was asked to do, and nothing in them waits by
sleeping: a waiting call waits on an event the test sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from domain import Event, MalformedEvent, decode, encode, headers
from forwarder.jobs import Blocked, Job
from forwarder.source import Batch, Consumed, RevokeHandler
from kernel.position import Position
from kernel.records import Header
from read_store.projection import Changes, Record, Snapshot, project
from read_store.writer import StoreRefused
from webhooks.calls import Answer

TOPIC = "merlin.events"


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Return once ``predicate()`` holds; fail naming ``what`` if it does not within ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s: {what}")
        await asyncio.sleep(0.001)


@dataclass(frozen=True)
class Raw:
    """A log record as confluent-kafka hands it out (a ``RawRecord``)."""

    at: tuple[int, int]  # partition, offset
    data: bytes | None
    room: bytes | None = None
    extra: tuple[tuple[str, Header], ...] = ()
    written: float = field(default_factory=time.time)  # Unix time

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self.at[0]

    def offset(self) -> int:
        return self.at[1]

    def key(self) -> bytes | None:
        return self.room

    def value(self) -> bytes | None:
        return self.data

    def headers(self) -> tuple[tuple[str, Header], ...]:
        return self.extra

    def timestamp(self) -> tuple[int, int]:
        return (1, int(self.written * 1000))  # TIMESTAMP_CREATE_TIME


def consumed(partition: int, offset: int, event: Event) -> Consumed:
    """A well-formed record of ``event``, as the Kafka source decodes it."""
    raw = Raw((partition, offset), encode(event), event.room_id.encode(), tuple(headers(event)))
    return Consumed(Record(partition, offset, event), raw)


def poison(partition: int, offset: int, data: bytes, extra: tuple[tuple[str, Header], ...] = ()) -> Consumed:
    """A record that is no event, with the reason the real decoder gives."""
    try:
        decode(data)
    except MalformedEvent as exc:
        return Consumed(
            Record(partition, offset, None), Raw((partition, offset), data, b"k", extra), str(exc)
        )
    raise AssertionError(f"{data!r} decodes")


def batch(*records: Consumed) -> Batch:
    return Batch(list(records), frozenset(c.record.partition for c in records))


class FakeSource:
    """A ``Source`` fed by the test: scripted batches, every pause/resume/commit recorded."""

    def __init__(self) -> None:
        self.pauses: list[set[int]] = []
        self.resumes: list[set[int]] = []
        self.commits: list[dict[int, int]] = []
        self.polls = 0
        self.closed = False
        self._queued: deque[Batch] = deque()
        self._arrived = asyncio.Event()
        self._revoked: RevokeHandler | None = None

    def push(self, *batches: Batch) -> None:
        """Queue batches for the next polls, one batch per poll."""
        self._queued.extend(batches)
        self._arrived.set()

    def queued(self) -> int:
        return len(self._queued)

    def committed(self) -> dict[int, int] | None:
        """The last commit, if any."""
        return self.commits[-1] if self.commits else None

    async def turns(self, count: int = 2) -> None:
        """Wait until the flow has polled ``count`` more times (so it has seen what happened before)."""
        target = self.polls + count
        await until(lambda: self.polls >= target, f"{count} more polls")

    async def revoke(self, partitions: list[int], lost: bool = False) -> dict[int, int]:
        """Take ``partitions`` away as a rebalance does; the offsets the flow says are safe to commit."""
        assert self._revoked is not None, "the flow has not started the source"
        return await self._revoked(partitions, lost)

    async def start(self, revoked: RevokeHandler) -> None:
        self._revoked = revoked

    async def batch(self, max_records: int, timeout: float) -> Batch:
        self.polls += 1
        if not self._queued:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
        if not self._queued:
            return Batch([], frozenset())
        head = self._queued.popleft()
        assert len(head.records) <= max_records, "the test queued a batch bigger than batch_max"
        return head

    async def pause(self, partitions: set[int]) -> None:
        self.pauses.append(set(partitions))

    async def resume(self, partitions: set[int]) -> None:
        self.resumes.append(set(partitions))

    async def commit(self, next_offsets: dict[int, int]) -> None:
        self.commits.append(dict(next_offsets))

    async def close(self) -> None:
        self.closed = True


class MemoryStore:
    """A ``ProjectionWriter`` over an in-memory snapshot, with the real projection rules.

    While ``gate`` is given and not set, every ``apply`` waits for it. A batch holding a
    record whose body is in ``refuses`` raises StoreRefused (as a store refusing it would);
    ``failures`` are raised by the next applies, one each (a store having a bad minute).
    """

    def __init__(
        self,
        gate: asyncio.Event | None = None,
        refuses: frozenset[str] = frozenset(),
        failures: Sequence[Exception] = (),
    ) -> None:
        self.gate = gate
        self.refuses = refuses
        self.failures = list(failures)
        self.snapshot = Snapshot()
        self.applied: list[list[Record]] = []
        self.attempts: list[list[Record]] = []
        self._landed = asyncio.Event()  # set, then replaced, by every apply that succeeds

    async def apply(
        self, records: Sequence[Record], refused: Mapping[tuple[int, int], str] | None = None
    ) -> Changes:
        if self.gate is not None:
            await self.gate.wait()
        self.attempts.append(list(records))
        if self.failures:
            raise self.failures.pop(0)
        bodies = {
            r.event.body
            for r in records
            if r.event is not None and (r.partition, r.offset) not in (refused or {})
        }
        if bodies & self.refuses:
            raise StoreRefused("the read store cannot keep this")
        changes = project(records, self.snapshot, refused)
        self.snapshot.positions.update(changes.positions)
        self.snapshot.messages.update(changes.messages)
        self.snapshot.last_seq.update(changes.last_seq)
        for outcome in changes.outcomes:
            applied = outcome.status == "applied" and outcome.code != "duplicate"
            self.snapshot.seen_event_ids[outcome.event.event_id] = applied
        self.applied.append(list(records))
        self._landed.set()
        self._landed = asyncio.Event()
        return changes

    async def ping(self) -> None:
        if self.failures:
            raise ConnectionError("the store does not answer")

    async def landed(self) -> None:
        """Return once the next apply has succeeded."""
        await self._landed.wait()


class MemoryReads:
    """What an endpoint's applied gate asks of the read store (``AppliedReads``), over a MemoryStore."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def _reached(self, position: Position) -> bool:
        return self.store.snapshot.positions.get(position.partition, -1) >= position.offset

    async def wait_for(self, position: Position, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self._reached(position):
                    await self.store.landed()
        return self._reached(position)

    async def applied(self, event_ids: Sequence[str]) -> set[str]:
        seen = self.store.snapshot.seen_event_ids
        return {event_id for event_id in event_ids if seen.get(UUID(event_id))}

    async def ping(self) -> None:
        await self.store.ping()


class Unwatched:
    """A ``DispatchWatch`` with no operators' controls behind it."""

    def blocked(self, endpoint: str, room: Blocked) -> None:
        pass

    def finished(self, endpoint: str, job: Job) -> None:
        pass

    def delivered(self, endpoint: str, outcome: str) -> None:
        pass


@dataclass(frozen=True)
class Sent:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, Header]]


@dataclass
class Sink:
    """A ``RecordSink`` (the dead-letter producer) that keeps what it was sent.

    While ``gate`` is given and not set, a send is recorded but not acknowledged.
    """

    gate: asyncio.Event | None = None
    sent: list[Sent] = field(default_factory=list)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, Header]] = (),
    ) -> tuple[int, int]:
        self.sent.append(Sent(topic, value, key, list(headers)))
        if self.gate is not None:
            await self.gate.wait()
        return 0, len(self.sent) - 1


class GatedSend:
    """An endpoint that answers each event only once the test releases it; records calls and answers."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.calls: list[str] = []  # event ids, as the calls arrived
        self.answered: list[str] = []
        self._gates: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def release(self, *events: Event) -> None:
        for event in events:
            self._gates[str(event.event_id)].set()

    async def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        event_id = headers["webhook-id"]
        self.calls.append(event_id)
        await self._gates[event_id].wait()
        self.answered.append(event_id)
        return Answer(self.status)
