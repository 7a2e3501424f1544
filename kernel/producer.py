"""A non-blocking Kafka producer for asyncio: ``await send(...)`` resolves when the broker has the record.

confluent-kafka's ``Producer.produce()`` only enqueues; its delivery callbacks,
run by a dedicated poll thread, are handed to the loop together after each
poll, which resolves the futures: one wake-up of the loop for all the
acknowledgements of a poll, not one each. (The ``aio`` producer of
confluent-kafka 2.16 refuses headers, which merlin needs.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from domain.errors import MerlinError
from kernel.errors import InfrastructureError
from kernel.logs import KAFKA_LOGGER
from kernel.settings import ClientConfig

Headers = Sequence[tuple[str, str | bytes | None]]
Delivery = tuple["asyncio.Future[tuple[int, int]]", "KafkaError | None", Message]


class BrokerUnavailable(InfrastructureError):
    """Kafka could not take a record now; the caller may retry later."""


class ProducerBusy(BrokerUnavailable):
    """The producer's local queue is full (back-pressure from the broker)."""


class OutcomeUnknown(BrokerUnavailable):
    """The record may or may not be in the log: it was sent, and no answer said which.

    A delivery that times out after the broker got the record, or whose leader died
    before answering, can still be committed by the next leader.
    """


class RecordTooLarge(MerlinError):
    """The broker (or the producer) will never take a record this large: retrying cannot help."""


_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})  # by the producer or by the broker
# Answers that say the record was not appended; any other failure may hide a committed write.
NOT_WRITTEN = frozenset(
    {
        KafkaError.NOT_ENOUGH_REPLICAS,  # refused before the append (NOT_ENOUGH_REPLICAS_AFTER_APPEND is not)
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError._QUEUE_FULL,
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    }
)


def delivery_failure(error: KafkaError) -> Exception:
    """What a failed delivery means for the caller: never written, too large, or unknown."""
    code = error.code()
    if code in _TOO_LARGE:
        return RecordTooLarge(error.str())
    if code in NOT_WRITTEN:
        return BrokerUnavailable(f"Kafka did not take the record: {error.str()}")
    return OutcomeUnknown(f"Kafka did not confirm the record: {error.str()}")


class AsyncProducer:
    """Produce records and await their acknowledgement without blocking the event loop."""

    def __init__(self, config: ClientConfig, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._producer = Producer({**config, "logger": KAFKA_LOGGER})
        self._closed = threading.Event()
        # When each write still waiting for its acknowledgement was sent (loop thread only).
        self._pending: dict[int, float] = {}
        # Acknowledgements served by a poll (or a flush), waiting to be handed to the loop.
        self._delivered: deque[Delivery] = deque()
        self._poller = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)
            self._hand_over()
        self._hand_over()

    def _hand_over(self) -> None:
        # Only this thread takes from the deque; callbacks on any thread add to it.
        delivered = self._delivered
        if delivered:
            batch = [delivered.popleft() for _ in range(len(delivered))]
            self._loop.call_soon_threadsafe(_settle_all, batch)

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Headers = ()
    ) -> tuple[int, int]:
        """Append one record; return its (partition, offset) once the broker acknowledged it."""
        future: asyncio.Future[tuple[int, int]] = self._loop.create_future()

        def delivered(error: KafkaError | None, message: Message) -> None:
            self._delivered.append((future, error, message))

        try:
            self._producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=delivered)
        except BufferError as exc:
            raise ProducerBusy("the Kafka producer queue is full") from exc
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() in _TOO_LARGE:
                raise RecordTooLarge(error.str()) from exc
            raise BrokerUnavailable(f"Kafka refused the record: {error.str()}") from exc
        self._pending[id(future)] = time.monotonic()
        try:
            return await future
        finally:
            self._pending.pop(id(future), None)

    def stalled(self, seconds: float) -> bool:
        """True when a write has waited more than ``seconds`` for its acknowledgement."""
        if not self._pending:
            return False
        return time.monotonic() - min(self._pending.values()) > seconds

    async def ready(self, topic: str, min_insync: int = 1, timeout: float = 2.0) -> bool:
        """True when every partition of ``topic`` has a leader and ``min_insync`` in-sync replicas,
        and no write has waited for its acknowledgement longer than ``timeout``.

        With fewer replicas an acks=all write is refused. The broker's metadata can be stale (a
        cluster that lost its controller quorum changes nothing in it), but writes stuck in
        flight cannot: a healthy broker acknowledges in milliseconds.
        """
        if self.stalled(timeout):
            return False

        def probe() -> bool:
            try:
                metadata = self._producer.list_topics(topic, timeout=timeout)
            except KafkaException:
                return False
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                return False
            return all(p.leader >= 0 and len(p.isrs) >= min_insync for p in found.partitions.values())

        return await asyncio.to_thread(probe)

    async def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout`` s), then stop the poll thread."""
        await asyncio.to_thread(self._producer.flush, timeout)
        self._closed.set()
        await asyncio.to_thread(self._poller.join, timeout)


def _settle_all(batch: list[Delivery]) -> None:
    for future, error, message in batch:
        if future.done():
            continue
        if error is not None:
            future.set_exception(delivery_failure(error))
        else:
            future.set_result((message.partition() or 0, message.offset() or 0))
