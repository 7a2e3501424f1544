"""The events both sides are given: MessageCreated over 100 rooms, keyed by room id.

merlin and the Camel HTTP sink read merlin's own envelope. The Debezium JDBC sink needs a
schema in every record (JsonConverter with schemas; a schemaless record fails its task
with a NullPointerException) and Kafka's transforms cannot add one, so it reads a copy of
the same events wrapped as ``{"schema": ..., "payload": <envelope>}`` on a topic of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import orjson
from confluent_kafka import KafkaError, Message, Producer

from domain import MessageCreated, headers
from domain.envelope import to_dict
from kernel.settings import KafkaSettings
from write_api.appender import producer_config

ROOMS = 100

_STRING = {"type": "string", "optional": False}
SCHEMA = {
    "type": "struct",
    "name": "merlin.MessageCreated",
    "optional": False,
    "fields": [
        {"field": "event_id", **_STRING},
        {"field": "event_type", **_STRING},
        {"field": "schema_version", "type": "int32", "optional": False},
        {"field": "room_id", **_STRING},
        {"field": "message_id", **_STRING},
        {"field": "occurred_at", **_STRING},
        {
            "field": "payload",
            "type": "struct",
            "optional": False,
            "fields": [{"field": "sender_id", **_STRING}, {"field": "body", **_STRING}],
        },
        {"field": "expected_version", "type": "int32", "optional": True},
    ],
}


def created(count: int) -> list[MessageCreated]:
    """``count`` events, room after room in turn, each with a 200-byte body (as bench.pipeline's)."""
    now = datetime.now(UTC)
    return [
        MessageCreated(uuid.uuid4(), f"room-{n % ROOMS}", uuid.uuid4(), "bench", "x" * 200, now)
        for n in range(count)
    ]


def with_schema(event: MessageCreated) -> bytes:
    """``event`` as Kafka's JsonConverter reads a record with its schema."""
    return orjson.dumps({"schema": SCHEMA, "payload": to_dict(event)})


def order(events: list[MessageCreated]) -> dict[str, int]:
    """Each message id's place in its room, as written."""
    places: dict[str, int] = {}
    counts: dict[str, int] = defaultdict(int)
    for event in events:
        places[str(event.message_id)] = counts[event.room_id]
        counts[event.room_id] += 1
    return places


def last_of_each_room(events: list[MessageCreated]) -> list[str]:
    """The message id of each room's last event: once all are in a store, every event is."""
    return list({event.room_id: str(event.message_id) for event in events}.values())


async def produce(
    kafka: KafkaSettings,
    topic: str,
    events: Iterable[MessageCreated],
    value: Callable[[MessageCreated], bytes],
) -> None:
    """Write ``events`` to ``topic`` (key = room id), as ``value`` renders them; return once all are acked."""
    await asyncio.to_thread(_produce, kafka, topic, events, value)


def _produce(
    kafka: KafkaSettings,
    topic: str,
    events: Iterable[MessageCreated],
    value: Callable[[MessageCreated], bytes],
) -> None:
    # As the write API writes them (small lz4 batches): on a topic written with 20 ms of linger and
    # no compression (1 MB record batches), merlin's projection into PostgreSQL ran at half speed.
    producer = Producer(kafka.client(producer_config(1.0, 120_000, 500_000)))
    failed: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failed.append(error)

    for event in events:
        while True:
            try:
                producer.produce(
                    topic,
                    value(event),
                    event.room_id.encode(),
                    headers=list(headers(event)),
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) > 0 or failed:
        raise RuntimeError(f"events not all acknowledged on {topic}: {failed[:1] or 'flush timed out'}")
