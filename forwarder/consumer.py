"""The events-topic consumer: confluent-kafka on one dedicated thread, positions owned by merlin.

Every call into the consumer runs on the same single thread, so the event loop
never blocks on it. Where a partition starts depends on the flow:

- the projection (given the read store's positions): at the earlier of the
  group's committed offset and the store's position + 1, so nothing is
  skipped, whatever was lost;
- an endpoint (given a ``since`` time): at its group's committed offset; a
  group that never committed starts at the first record written at or after
  ``since`` (the end of the log if there is none yet), or earlier where the
  ``no_later_than`` group (the projection's) had committed less, and commits
  that at once, so the starting point holds across restarts.

On revocation, the flow drops what it had in flight for those partitions and
the consumer commits what was finished. Rebalancing is cooperative
(cooperative-sticky): only the partitions that change owner are revoked and
assigned, so the others flow on through a member's join or leave.

A rebuild of the read store reads the log outside any group (``AssignedConsumer``):
every partition assigned by hand, from the target store's positions, so it takes
no partition from a live flow and moves no group's offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from domain import MalformedEvent, decode
from forwarder.metrics import ForwarderMetrics
from forwarder.source import Batch, Consumed, RevokeHandler
from kernel.consumer_thread import ConsumerThread
from kernel.errors import InfrastructureError
from kernel.logs import KAFKA_LOGGER
from kernel.records import arrived
from kernel.settings import ClientConfig, KafkaSettings
from read_store.projection import Record

log = structlog.get_logger()

PositionLoader = Callable[[], Coroutine[Any, Any, dict[int, int]]]


class _ThreadedConsumer:
    """A confluent-kafka consumer on one dedicated thread: decoded batches, pause and resume, close.

    What differs between its kinds is how partitions come to it (a group, or assigned by hand).
    """

    def __init__(self, topic: str) -> None:
        self._topic = topic
        self._loop = asyncio.get_running_loop()  # where the thread's callbacks hand work back
        self._thread = ConsumerThread("kafka-consumer")
        self._call = self._thread.call
        self._consumer: Consumer | None = None

    async def pause(self, partitions: set[int]) -> None:
        """Stop fetching ``partitions`` (the consumer keeps polling: a group member stays in its group)."""
        if self._consumer is not None and partitions:
            consumer = self._consumer
            await self._call(consumer.pause, [TopicPartition(self._topic, p) for p in partitions])

    async def resume(self, partitions: set[int]) -> None:
        """Fetch ``partitions`` again."""
        if self._consumer is not None and partitions:
            consumer = self._consumer
            await self._call(consumer.resume, [TopicPartition(self._topic, p) for p in partitions])

    async def batch(self, max_records: int, timeout: float) -> Batch:
        """Up to ``max_records`` records, decoded, waiting at most ``timeout`` s for the first."""
        assert self._consumer is not None, "start() first"
        return await self._call(self._next_batch, self._consumer, max_records, timeout)

    def _next_batch(self, consumer: Consumer, max_records: int, timeout: float) -> Batch:
        """The next batch, on the consumer thread."""
        return self._fetch(consumer, max_records, timeout)

    @staticmethod
    def _fetch(consumer: Consumer, max_records: int, timeout: float) -> Batch:
        # Decoding here overlaps it with the projector's transaction instead of following it.
        messages = arrived(consumer, max_records, timeout)
        fetched: list[Consumed] = []
        for message in messages:
            error = message.error()
            if error is not None:
                # A fatal error leaves this consumer unusable (librdkafka reports some as a
                # message of code _FATAL without the flag): the flow restarts with a new one.
                if error.fatal() or error.code() == KafkaError._FATAL:
                    raise KafkaException(error)
                log.warning("consume_error", error=error.str())
                continue
            partition, offset = message.partition() or 0, message.offset() or 0
            try:
                fetched.append(Consumed(Record(partition, offset, decode(message.value())), message))
            except MalformedEvent as exc:
                fetched.append(Consumed(Record(partition, offset, None), message, str(exc)))
        return Batch(fetched, frozenset(consumed.record.partition for consumed in fetched))

    async def close(self) -> None:
        """Close the consumer (leaving its group, if any) and stop its thread."""
        if self._consumer is not None:
            await self._call(self._consumer.close)
            self._consumer = None
        self._thread.stop()


class EventConsumer(_ThreadedConsumer):
    """The flow's ``Source`` on Kafka: batches of the events topic, resumed from the store's positions."""

    def __init__(
        self,
        config: ClientConfig,
        topic: str,
        metrics: ForwarderMetrics,
        *,
        positions: PositionLoader | None = None,
        since: datetime | None = None,
        no_later_than: ClientConfig | None = None,
    ) -> None:
        if (positions is None) == (since is None):
            raise ValueError("a consumer starts from the store's positions or from a time, not both")
        super().__init__(topic)
        self._since = since
        self._no_later_than = no_later_than
        self._config = config
        self._positions = positions
        self._revoked: RevokeHandler | None = None
        self._metrics = metrics
        self._group = str(config.get("group.id", ""))
        # Cooperative rebalancing and the consumer group protocol hand over only the partitions
        # that change owner, so the assignment grows and shrinks by increments instead of being replaced.
        self._incremental = (
            config.get("group.protocol") == "consumer"
            or config.get("partition.assignment.strategy") == "cooperative-sticky"
        )
        # Per partition, the next offset this group has committed (or will start from): what lag counts from.
        self._next: dict[int, int] = {}

    async def start(self, revoked: RevokeHandler) -> None:
        """Join the group and subscribe; ``revoked`` hears of every revocation."""
        self._revoked = revoked
        await self._call(self._open)

    def _open(self) -> None:
        consumer = Consumer({**self._config, "logger": KAFKA_LOGGER})
        consumer.subscribe(
            [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._consumer = consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Runs on the consumer thread inside consume().
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=30)}
        starts = (
            self._from_store(committed)
            if self._positions is not None
            else self._from_time(consumer, committed)
        )
        for partition in partitions:
            start = starts.get(partition.partition, 0)
            partition.offset = OFFSET_BEGINNING if start <= 0 else start
            self._next[partition.partition] = max(0, start)
        if self._incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self._metrics.rebalances.labels("assigned").inc()
        self._metrics.assigned.labels(self._group).set(len(consumer.assignment()))
        log.info(
            "partitions_assigned",
            group=self._group,
            topic=self._topic,
            partitions={p.partition: p.offset for p in partitions},
        )

    def _from_store(self, committed: dict[int, int]) -> dict[int, int]:
        assert self._positions is not None
        stored = asyncio.run_coroutine_threadsafe(self._positions(), self._loop).result(timeout=60)
        starts = {}
        for partition, delivered in committed.items():
            projected = stored.get(partition, -1) + 1
            starts[partition] = min(projected, delivered) if delivered >= 0 else projected
        return starts

    def _from_time(self, consumer: Consumer, committed: dict[int, int]) -> dict[int, int]:
        assert self._since is not None
        starts = {partition: offset for partition, offset in committed.items() if offset >= 0}
        fresh = [p for p in committed if p not in starts]
        if not fresh:
            return starts
        moment = int(self._since.timestamp() * 1000)
        # The ends before the lookup: a record written after it is past them, so starting at an
        # end read now could skip a record that landed between the lookup and that read.
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(self._topic, p), timeout=30)[1] for p in fresh
        }
        found = consumer.offsets_for_times(
            [TopicPartition(self._topic, p, moment) for p in fresh], timeout=30
        )
        for tp in found:
            # None written at or after that time yet: start where the next one will be.
            starts[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
        if self._no_later_than is not None:
            other = Consumer(self._no_later_than)
            try:
                for tp in other.committed([TopicPartition(self._topic, p) for p in fresh], timeout=30):
                    if tp.offset >= 0:
                        starts[tp.partition] = min(starts[tp.partition], tp.offset)
            finally:
                other.close()
        first = [TopicPartition(self._topic, p, starts[p]) for p in fresh]
        consumer.commit(offsets=first, asynchronous=False)
        log.info("endpoint_starts", topic=self._topic, since=self._since.isoformat(), offsets={
            tp.partition: tp.offset for tp in first
        })  # fmt: skip
        return starts

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("revoked").inc()
        numbers = [p.partition for p in partitions]
        kept = {tp.partition for tp in consumer.assignment()} - set(numbers)
        self._metrics.assigned.labels(self._group).set(len(kept))
        self._forget_lag(numbers)
        assert self._revoked is not None, "start() first"
        finished = asyncio.run_coroutine_threadsafe(self._revoked(numbers, False), self._loop).result(60)
        if finished:
            offsets = [TopicPartition(self._topic, p, offset) for p, offset in finished.items()]
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:  # the next owner re-delivers from the older commit
                log.warning("commit_on_revoke_failed", error=str(exc))
        # confluent-kafka takes them out of the assignment once this returns (incrementally
        # under cooperative rebalancing).
        log.info("partitions_revoked", topic=self._topic, partitions=numbers, committed=finished)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels("lost").inc()
        numbers = [p.partition for p in partitions]
        kept = {tp.partition for tp in consumer.assignment()} - set(numbers)
        self._metrics.assigned.labels(self._group).set(len(kept))
        self._forget_lag(numbers)
        # Lost partitions may already belong to another member: drop, never commit.
        assert self._revoked is not None, "start() first"
        asyncio.run_coroutine_threadsafe(self._revoked(numbers, True), self._loop).result(60)
        log.warning("partitions_lost", topic=self._topic, partitions=numbers)

    def _next_batch(self, consumer: Consumer, max_records: int, timeout: float) -> Batch:
        batch = super()._next_batch(consumer, max_records, timeout)
        lag, group, topic = self._metrics.lag, self._group, self._topic
        for partition, next_offset in self._next.items():
            # The end as of the last fetch response: no request to the broker.
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            if high >= 0:
                lag.labels(group, topic, str(partition)).set(max(0, high - next_offset))
        return batch

    def _forget_lag(self, partitions: list[int]) -> None:
        for partition in partitions:
            if self._next.pop(partition, None) is not None:
                self._metrics.lag.remove(self._group, self._topic, str(partition))

    async def commit(self, next_offsets: dict[int, int]) -> None:
        """Record progress in the group too, so Kafka tooling shows the forwarder's lag."""
        if self._consumer is None or not next_offsets:
            return
        consumer = self._consumer
        offsets = [TopicPartition(self._topic, p, offset) for p, offset in next_offsets.items()]

        def commit() -> None:
            consumer.commit(offsets=offsets, asynchronous=True)
            self._next.update((p, o) for p, o in next_offsets.items() if p in self._next)

        await self._call(commit)


class AssignedConsumer(_ThreadedConsumer):
    """The flow's ``Source`` outside any consumer group: every partition assigned, from given offsets.

    librdkafka wants a ``group.id`` in the configuration even so; without ``subscribe`` and
    without commits, that group is never joined and never written.
    """

    def __init__(self, config: ClientConfig, topic: str, starts: Mapping[int, int]) -> None:
        super().__init__(topic)
        self._config = config
        self._starts = dict(starts)

    async def start(self, revoked: RevokeHandler) -> None:
        """Assign every partition at its start; ``revoked`` is never called, as no group takes any away."""
        await self._call(self._open)

    def _open(self) -> None:
        consumer = Consumer({**self._config, "logger": KAFKA_LOGGER})
        consumer.assign([TopicPartition(self._topic, p, offset) for p, offset in self._starts.items()])
        self._consumer = consumer
        log.info("partitions_assigned", topic=self._topic, partitions=self._starts)

    async def commit(self, next_offsets: dict[int, int]) -> None:
        """Nothing to do: the positions are the store's, written with each batch."""


def log_reader_config(kafka: KafkaSettings, group: str, batch_max: int) -> ClientConfig:
    """A consumer's settings for reading the log outside any group (``AssignedConsumer``)."""
    return kafka.client(
        {
            # librdkafka insists on a group id; this one is never joined (assign, no commits).
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Never skip silently: a start the log no longer holds is an error, not "the earliest".
            "auto.offset.reset": "error",
            "fetch.wait.max.ms": 10,
            # About a batch prefetched, as the live projection does (a pause drops the prefetched).
            "queued.min.messages": batch_max,
            # Past that, librdkafka waits 1 s by default before fetching the partition again:
            # a whole log read that way went at 10,000 records/s where it could go at 100,000.
            "fetch.queue.backoff.ms": 20,
        }
    )


def log_bounds(config: ClientConfig, topic: str, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``, its first offset and the offset after its last (blocking).

    The first is above 0 once retention has deleted the oldest records.
    """
    consumer = Consumer({**config, "logger": KAFKA_LOGGER})
    try:
        found = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if found is None or found.error is not None:
            why = "not found" if found is None else found.error.str()
            raise InfrastructureError(f"topic {topic} on {config.get('bootstrap.servers')}: {why}")
        bounds = {}
        for partition in sorted(found.partitions):
            answer = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            if answer is None:  # confluent-kafka's answer to a timeout
                raise InfrastructureError(
                    f"partition {partition} of {topic}: no offsets within {timeout:g} s"
                )
            bounds[partition] = (int(answer[0]), int(answer[1]))
        return bounds
    except KafkaException as exc:
        raise InfrastructureError(
            f"the broker at {config.get('bootstrap.servers')} did not answer about topic {topic}:"
            f" {exc.args[0].str()}"
        ) from exc
    finally:
        consumer.close()
