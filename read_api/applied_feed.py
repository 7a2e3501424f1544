"""The live rooms' feed: the events topic itself, filtered by the read store's outcomes (decision 0025).

Each read API process runs one ``AppliedFeed``, begun by the first live stream: a consumer in no
group, every partition of the events topic assigned from the store's applied positions + 1, on a
thread of its own (``kernel.consumer_thread``), so the event loop never blocks on it. Per batch it
waits until the projection has applied it, asks the store once which of its events were applied
(``ReadStore.applied_changes``), and publishes those, in log order per partition, to the
subscribers of their rooms (``read_api.handover.Fanout``). A stream that resumes reads the log
again, from its resume point up to where the feed took over, with a short-lived consumer of its
rooms' partitions (``replay``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from domain import Event, MalformedEvent, MessageCreated, decode
from domain.envelope import format_time
from kernel.consumer_thread import ConsumerThread
from kernel.errors import InfrastructureError
from kernel.logs import KAFKA_LOGGER
from kernel.position import Position
from kernel.records import arrived
from kernel.settings import ClientConfig, KafkaSettings
from read_api.handover import Change, Fanout, Subscription
from read_store.position_watch import CallerWaitsTooMuch, TooManyWaiters
from read_store.reader import ReadStore

log = structlog.get_logger()

EVENT_NAMES = {"MessageCreated": "message.created", "MessageUpdated": "message.updated"}


class ResumeTooOld(InfrastructureError):
    """Retention has deleted records after the resume point: the client must reload the room."""


@dataclass(frozen=True, slots=True)
class Fetched:
    partition: int
    offset: int
    event: Event | None  # None: a record that is no event (the projection dead-lettered it)


def reader_config(kafka: KafkaSettings, batch: int) -> ClientConfig:
    """A consumer that reads the log in no group: assigned partitions, nothing committed."""
    return kafka.client(
        {
            # librdkafka insists on a group id; this one is never joined (assign, no commits), so the
            # read API's user needs no ACL on it.
            "group.id": f"{kafka.events_topic}.read-api.live",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "fetch.wait.max.ms": 10,
            "queued.min.messages": batch,
            "fetch.queue.backoff.ms": 20,
        }
    )


class LogReader:
    """A consumer of some partitions of the events topic from given offsets, on a thread of its own."""

    def __init__(self, config: ClientConfig, topic: str, name: str) -> None:
        self._config = config
        self._topic = topic
        self._thread = ConsumerThread(name)
        self._consumer: Consumer | None = None

    async def open(self, starts: Callable[[Consumer], Mapping[int, int]]) -> dict[int, int]:
        """Assign the partitions ``starts`` gives (it runs on the consumer's thread, and may ask the
        broker through the consumer it is given); returns them."""
        return await self._thread.call(self._open, starts)

    def _open(self, starts: Callable[[Consumer], Mapping[int, int]]) -> dict[int, int]:
        consumer = Consumer({**self._config, "logger": KAFKA_LOGGER})
        self._consumer = consumer
        assigned = dict(starts(consumer))
        consumer.assign(
            [
                TopicPartition(self._topic, p, OFFSET_BEGINNING if offset <= 0 else offset)
                for p, offset in assigned.items()
            ]
        )
        return assigned

    async def fetch(self, max_records: int, timeout: float) -> list[Fetched]:
        """Up to ``max_records`` records, decoded, waiting at most ``timeout`` s for the first."""
        consumer = self._consumer
        assert consumer is not None, "open() first"
        return await self._thread.call(_fetch, consumer, max_records, timeout)

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await self._thread.call(consumer.close)
        self._thread.stop()


def partitions_of(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """The topic's partitions (on the consumer's thread)."""
    found = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise InfrastructureError(f"topic {topic}: not found")
    return sorted(found.partitions)


def first_offset(consumer: Consumer, topic: str, partition: int, timeout: float = 10.0) -> int:
    """The first offset the log still holds in ``partition`` (on the consumer's thread)."""
    answer = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
    if answer is None:
        raise InfrastructureError(f"partition {partition} of {topic}: no offsets within {timeout:g} s")
    return int(answer[0])


def _fetch(consumer: Consumer, max_records: int, timeout: float) -> list[Fetched]:
    fetched = []
    for message in arrived(consumer, max_records, timeout):
        error = message.error()
        if error is not None:
            if error.fatal() or error.code() in (KafkaError._FATAL, KafkaError.OFFSET_OUT_OF_RANGE):
                raise KafkaException(error)
            log.warning("live_consume_error", error=error.str())
            continue
        partition, offset = message.partition() or 0, message.offset() or 0
        try:
            event: Event | None = decode(message.value())
        except MalformedEvent:
            event = None
        fetched.append(Fetched(partition, offset, event))
    return fetched


class AppliedFeed:
    """Every event the projection applied, published to the subscribers of its room as it is applied."""

    def __init__(
        self,
        kafka: KafkaSettings,
        reads: Callable[[], ReadStore],
        batch: int,
        on_lagged: Callable[[Subscription], None] = lambda _s: None,
        poll_timeout: float = 0.5,
    ) -> None:
        self._kafka = kafka
        self._reads = reads
        self._batch = batch
        self._poll_timeout = poll_timeout
        self._on_lagged = on_lagged
        self.fanout = Fanout()
        self.partitions: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None

    async def started(self, timeout: float) -> bool:
        """Begin the feed unless it runs; True once it reads the log (False: not within ``timeout`` s)."""
        if self._task is None or self._task.done():
            self._started = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(self._started))
        assert self._started is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except TimeoutError:
            return False
        return True

    def subscribe(self, rooms: frozenset[str], capacity: int) -> Subscription:
        return self.fanout.subscribe(rooms, capacity)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.fanout.unsubscribe(subscription)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, started: asyncio.Future[None]) -> None:
        """Read on, from where the feed got to, with a new consumer after any failure."""
        pause = 0.5
        topic = self._kafka.events_topic
        while True:
            reader = LogReader(reader_config(self._kafka, self._batch), topic, "live-feed")
            try:
                # Before the first start, where the projection has applied up to: everything applied
                # later is published; everything applied before, a resuming stream replays.
                applied = None if self.fanout.next else await self._reads().positions()
                starts = functools.partial(_feed_starts, topic, applied, dict(self.fanout.next))
                assigned = await reader.open(starts)
                self.partitions = len(assigned)
                self.fanout.begin(assigned)
                if not started.done():
                    started.set_result(None)
                log.info("live_feed_started", partitions=assigned)
                pause = 0.5
                while True:
                    await self._step(reader)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker or the store failed: begin again from where it got to
                log.warning("live_feed_failed", error=repr(exc))
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
            finally:
                await reader.close()

    async def _step(self, reader: LogReader) -> None:
        records = await reader.fetch(self._batch, self._poll_timeout)
        if not records:
            return
        next_offsets = self.fanout.next
        fresh = [r for r in records if r.offset >= next_offsets.get(r.partition, 0)]
        through: dict[int, int] = {}
        for record in records:
            through[record.partition] = max(through.get(record.partition, -1), record.offset)
        reads = self._reads()
        for partition, offset in through.items():
            await _applied_through(reads, Position(partition, offset))
        changes = await changes_of(reads, fresh)
        for subscription in self.fanout.publish(changes, through):
            self._on_lagged(subscription)

    async def replay(
        self, rooms: frozenset[str], ranges: Mapping[int, tuple[int, int]]
    ) -> AsyncIterator[list[Change]]:
        """The applied changes of ``rooms`` in ``ranges`` (per partition, from an offset up to one not
        included), in log order per partition; ``ResumeTooOld`` when the log no longer holds the first."""
        if not ranges:
            return
        reader = LogReader(reader_config(self._kafka, self._batch), self._kafka.events_topic, "live-replay")

        def starts(consumer: Consumer) -> dict[int, int]:
            for partition, (first, _until) in ranges.items():
                if first_offset(consumer, self._kafka.events_topic, partition) > first:
                    raise ResumeTooOld(f"partition {partition} no longer holds offset {first}")
            return {partition: first for partition, (first, _until) in ranges.items()}

        try:
            await reader.open(starts)
            left = {p: until for p, (_first, until) in ranges.items()}
            reads = self._reads()
            while left:
                records = await reader.fetch(self._batch, self._poll_timeout)
                wanted = [
                    r
                    for r in records
                    if r.partition in left
                    and r.offset < left[r.partition]
                    and r.event is not None
                    and r.event.room_id in rooms
                ]
                for record in records:
                    if record.partition in left and record.offset >= left[record.partition] - 1:
                        del left[record.partition]
                # Everything before where the feed took over is applied already: no wait.
                changes = await changes_of(reads, wanted)
                if changes:
                    yield changes
        finally:
            await reader.close()


def _feed_starts(
    topic: str, applied: Mapping[int, int] | None, had: Mapping[int, int], consumer: Consumer
) -> dict[int, int]:
    """Every partition of ``topic``: just after the ``applied`` position, or where the feed ``had`` got."""
    partitions = partitions_of(consumer, topic)
    if applied is None:
        return {p: had.get(p, 0) for p in partitions}
    return {p: applied.get(p, -1) + 1 for p in partitions}


async def _applied_through(reads: ReadStore, position: Position) -> None:
    """Wait, however long it takes, until the projection has applied ``position``."""
    while True:
        try:
            if await reads.wait_for(position, 5.0):
                return
        except (TooManyWaiters, CallerWaitsTooMuch):
            # Readers fill the watch's places: the feed asks the store itself, a little later.
            await asyncio.sleep(0.05)
            if (await reads.positions()).get(position.partition, -1) >= position.offset:
                return


async def changes_of(reads: ReadStore, records: Sequence[Fetched]) -> list[Change]:
    """The changes of the applied events among ``records``, in their order."""
    events = [r for r in records if r.event is not None]
    if not events:
        return []
    applied = await reads.applied_changes([str(r.event.event_id) for r in events if r.event is not None])
    changes = []
    for record in events:
        event = record.event
        assert event is not None
        found = applied.get(str(event.event_id))
        if found is None:
            continue
        position = Position(record.partition, record.offset)
        message: dict[str, Any] = {
            "message_id": str(event.message_id),
            "room_id": event.room_id,
            # An edit is applied only from the message's sender: the event's is the message's.
            "sender_id": event.sender_id,
            "body": event.body,
            "version": found.version,
            "seq": found.seq,
            "created_at": found.created_at,
            # A message's times are its events' (``domain.evolve``): a create's is its creation.
            "updated_at": found.created_at
            if isinstance(event, MessageCreated)
            else format_time(event.occurred_at),
            "event_id": str(event.event_id),
            "position": str(position),
        }
        changes.append(Change(event.room_id, position, EVENT_NAMES[event.event_type], message))
    return changes
