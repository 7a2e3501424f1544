"""A non-blocking Kafka producer for asyncio: ``await send(...)`` resolves when the broker has the record.

confluent-kafka's ``Producer.produce()`` only enqueues; its delivery callback,
run by a dedicated poll thread, resolves an asyncio future on the loop. (The
``aio`` producer of confluent-kafka 2.16 refuses headers, which merlin needs.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from kernel.errors import InfrastructureError
from kernel.logs import KAFKA_LOGGER
from kernel.settings import ClientConfig

Headers = Sequence[tuple[str, str | bytes | None]]


class BrokerUnavailable(InfrastructureError):
    """Kafka could not take a record now; the caller may retry later."""


class ProducerBusy(BrokerUnavailable):
    """The producer's local queue is full (back-pressure from the broker)."""


class RecordTooLarge(Exception):
    """The broker (or the producer) will never take a record this large: retrying cannot help."""


_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})  # by the producer or by the broker


class AsyncProducer:
    """Produce records and await their acknowledgement without blocking the event loop."""

    def __init__(self, config: ClientConfig, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._producer = Producer({**config, "logger": KAFKA_LOGGER})
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Headers = ()
    ) -> tuple[int, int]:
        """Append one record; return its (partition, offset) once the broker acknowledged it."""
        future: asyncio.Future[tuple[int, int]] = self._loop.create_future()

        def delivered(error: KafkaError | None, message: Message) -> None:
            self._loop.call_soon_threadsafe(_settle, future, error, message)

        try:
            self._producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=delivered)
        except BufferError as exc:
            raise ProducerBusy("the Kafka producer queue is full") from exc
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() in _TOO_LARGE:
                raise RecordTooLarge(error.str()) from exc
            raise BrokerUnavailable(f"Kafka refused the record: {error.str()}") from exc
        return await future

    async def ready(self, topic: str, timeout: float = 2.0) -> bool:
        """True when the broker answers metadata for ``topic`` (run off the event loop)."""

        def probe() -> bool:
            try:
                metadata = self._producer.list_topics(topic, timeout=timeout)
            except KafkaException:
                return False
            found = metadata.topics.get(topic)
            return found is not None and found.error is None and bool(found.partitions)

        return await asyncio.to_thread(probe)

    async def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout`` s), then stop the poll thread."""
        await asyncio.to_thread(self._producer.flush, timeout)
        self._closed.set()
        await asyncio.to_thread(self._poller.join, timeout)


def _settle(future: asyncio.Future[tuple[int, int]], error: KafkaError | None, message: Message) -> None:
    if future.done():
        return
    if error is not None and error.code() in _TOO_LARGE:
        future.set_exception(RecordTooLarge(error.str()))
    elif error is not None:
        future.set_exception(BrokerUnavailable(f"Kafka did not take the record: {error.str()}"))
    else:
        future.set_result((message.partition() or 0, message.offset() or 0))
