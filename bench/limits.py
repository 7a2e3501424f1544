"""The limits of this machine, each measured by a separate process: ``python -m bench.limits <what> …``.

- ``producer N``: a raw confluent-kafka producer loop with the write API's settings (acks=all,
  idempotence) and the same envelopes: messages/s and delivery latency.
- ``consumer N``: a raw confluent-kafka consumer loop that only decodes the envelopes: events/s.
- ``http PORT``: the write API's HTTP stack answering 202 without producing.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, Message, Producer

from domain import MessageCreated, decode, encode, headers
from kernel.position import Position
from kernel.settings import KafkaSettings
from write_api.appender import producer_config


def envelope(n: int, body_bytes: int = 200) -> MessageCreated:
    return MessageCreated(
        uuid.uuid4(), f"room-{n % 100}", uuid.uuid4(), "bench", "x" * body_bytes, datetime.now(UTC)
    )


def produce(count: int, kafka: KafkaSettings) -> dict[str, float]:
    producer = Producer(kafka.client(producer_config(1.0, 30_000, 1_000_000)))
    latencies: list[float] = []

    def on_delivery(sent: float) -> Callable[[KafkaError | None, Message], None]:
        def delivered(_error: KafkaError | None, _message: Message) -> None:
            latencies.append(time.perf_counter() - sent)

        return delivered

    started = time.perf_counter()
    for n in range(count):
        event = envelope(n)
        sent = time.perf_counter()
        while True:
            try:
                producer.produce(
                    kafka.events_topic, encode(event), key=event.room_id.encode(),
                    headers=list(headers(event)), on_delivery=on_delivery(sent),
                )  # fmt: skip
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "messages_per_second": count / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def consume(count: int, kafka: KafkaSettings) -> dict[str, float]:
    consumer = Consumer(
        kafka.client({"group.id": f"bench-raw-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                      "enable.auto.commit": False})
    )  # fmt: skip
    consumer.subscribe([kafka.events_topic])
    seen = 0
    started: float | None = None
    while seen < count:
        batch = consumer.consume(1000, 1.0)
        if batch and started is None:
            started = time.perf_counter()
        for message in batch:
            decode(message.value())
            seen += 1
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return {"events_per_second": seen / elapsed}


class NullAppender:
    """Answers like the Kafka appender without producing anything: the HTTP stack's own limit."""

    def __init__(self) -> None:
        self.offset = 0

    async def append(self, _event: object, traceparent: str | None = None) -> Position:
        self.offset += 1
        return Position(0, self.offset)

    async def ready(self) -> bool:
        return True


def serve_http(port: int) -> None:
    import uvicorn

    from kernel.http.edge import guarded_protocol
    from kernel.http.edge_settings import EdgeSettings
    from write_api.app import create_app
    from write_api.settings import WriteApiSettings

    app = create_app(WriteApiSettings(port=port), appender=NullAppender())
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
        http=guarded_protocol(EdgeSettings()),
    )  # fmt: skip


def main() -> None:
    what, argument = sys.argv[1], int(sys.argv[2])
    kafka = KafkaSettings()
    if what == "producer":
        print(json.dumps(produce(argument, kafka)))
    elif what == "consumer":
        print(json.dumps(consume(argument, kafka)))
    elif what == "http":
        serve_http(argument)
    else:
        raise SystemExit(f"unknown limit {what!r}")


if __name__ == "__main__":
    main()
