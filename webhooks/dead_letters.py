"""The dead-letter topic: every dead-letter record merlin writes, its document and its headers, built here.

- A record that is no event (or that the read store refused): the original
  record, untouched, with why and where it failed in ``merlin.dlq.*`` headers.
- A delivery that failed for good: a JSON document with the event, the
  endpoint, the reason and every attempt, keyed by room.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import orjson

from kernel.records import Header, RawRecord
from webhooks.endpoints import Endpoint
from webhooks.sending import Attempt

DELIVERY_STAGE = "delivery"


def header_map(headers: Sequence[tuple[str, Header]] | Mapping[str, Header] | None) -> dict[str, str]:
    """A record's headers as text, the last value of each name."""
    pairs = (headers or {}).items() if isinstance(headers, Mapping) else (headers or [])
    return {
        name: value.decode(errors="replace") if isinstance(value, bytes) else value
        for name, value in pairs
        if value is not None
    }


class RecordSink(Protocol):
    """Where dead letters go (``kernel.producer.AsyncProducer`` in production)."""

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, Header]] = (),
    ) -> tuple[int, int]: ...


class DeadLetters:
    def __init__(self, producer: RecordSink, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def send(self, record: RawRecord, stage: str, reason: str) -> None:
        """Put ``record`` on the dead-letter topic; return once the broker has it."""
        original = record.headers() or []
        headers: list[tuple[str, Header]] = [
            *(original.items() if isinstance(original, Mapping) else original),
            ("merlin.dlq.stage", stage.encode()),
            ("merlin.dlq.reason", reason.encode()),
            ("merlin.dlq.topic", (record.topic() or "").encode()),
            ("merlin.dlq.partition", str(record.partition()).encode()),
            ("merlin.dlq.offset", str(record.offset()).encode()),
        ]
        await self.producer.send(self.topic, record.value(), key=record.key(), headers=headers)

    async def send_failed_delivery(
        self,
        *,
        partition: int,
        offset: int,
        room_id: str,
        event_id: str,
        event: bytes,
        endpoint: Endpoint,
        reason: str,
        attempts: list[Attempt],
    ) -> None:
        """Record a delivery that failed for good: the event, the endpoint, the attempts, the reason."""
        document = orjson.dumps(
            {
                "event": orjson.Fragment(event),
                "endpoint": {"name": endpoint.name, "url": endpoint.shown_url},
                "reason": reason,
                "attempts": [attempt.as_dict() for attempt in attempts],
            }
        )
        headers = [
            ("merlin.dlq.stage", DELIVERY_STAGE.encode()),
            ("merlin.dlq.reason", reason.encode()),
            ("merlin.dlq.endpoint", endpoint.name.encode()),
            ("merlin.dlq.partition", str(partition).encode()),
            ("merlin.dlq.offset", str(offset).encode()),
            ("event_id", event_id.encode()),
        ]
        await self.producer.send(self.topic, document, key=room_id.encode(), headers=headers)
