"""Appends events to the events topic: key = room, value = envelope, headers for routing and tracing."""

from __future__ import annotations

from typing import Protocol

from domain import Event, encode, headers
from kernel.position import Position
from kernel.producer import AsyncProducer
from kernel.settings import ClientConfig


def producer_config(linger_ms: float, delivery_timeout_ms: int, queue_max_messages: int) -> ClientConfig:
    """Durable producer settings: nothing acknowledged is ever lost, order per key is kept."""
    return {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": linger_ms,
        "message.timeout.ms": delivery_timeout_ms,
        "queue.buffering.max.messages": queue_max_messages,
        "compression.type": "lz4",
    }


class Appender(Protocol):
    """Where the write API puts events: Kafka in production, anything else in a benchmark or test."""

    async def append(self, event: Event, traceparent: str | None = None) -> Position: ...

    async def ready(self) -> bool: ...


class EventAppender:
    """Writes events durably and says where they landed."""

    def __init__(self, producer: AsyncProducer, topic: str, min_insync: int = 1) -> None:
        self.producer = producer
        self.topic = topic
        self.min_insync = min_insync

    async def append(self, event: Event, traceparent: str | None = None) -> Position:
        """Append ``event``; return its position once the broker has it (acks=all)."""
        record_headers = headers(event)
        if traceparent:
            record_headers.append(("traceparent", traceparent.encode()))
        partition, offset = await self.producer.send(
            self.topic, encode(event), key=event.room_id.encode(), headers=record_headers
        )
        return Position(partition, offset)

    async def ready(self) -> bool:
        """True when an acks=all write to every partition of the events topic can succeed now."""
        return await self.producer.ready(self.topic, self.min_insync)
