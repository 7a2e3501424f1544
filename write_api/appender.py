"""Appends events to the events topic: key = room, value = envelope, headers for routing and tracing."""

from __future__ import annotations

from typing import Protocol

from domain import Event, encode, headers
from kernel import tracing
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
        """Append ``event``; return its position once the broker has it (acks=all).

        The record carries the trace context: with tracing off, the caller's ``traceparent`` as
        it came; with tracing on, the produce span's (``traceparent``, ``tracestate``).
        """
        if tracing.ENABLED:
            return await self._append_traced(event)
        record_headers = headers(event)
        if traceparent:
            record_headers.append(("traceparent", traceparent.encode()))
        partition, offset = await self.producer.send(
            self.topic, encode(event), key=event.room_id.encode(), headers=record_headers
        )
        return Position(partition, offset)

    async def _append_traced(self, event: Event) -> Position:
        """``append`` as a PRODUCER span, from produce to the broker's delivery report."""
        from opentelemetry.trace import SpanKind

        topic = self.topic
        with tracing.tracer().start_as_current_span(
            f"send {topic}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": topic,
                "messaging.kafka.message.key": event.room_id,
                "messaging.message.id": str(event.event_id),
            },
        ) as span:
            record_headers: list[tuple[str, str | bytes | None]] = list(headers(event))
            record_headers.extend((name, value.encode()) for name, value in tracing.inject_into({}).items())
            partition, offset = await self.producer.send(
                topic, encode(event), key=event.room_id.encode(), headers=record_headers
            )
            span.set_attribute("messaging.destination.partition.id", str(partition))
            span.set_attribute("messaging.kafka.offset", offset)
            return Position(partition, offset)

    async def ready(self) -> bool:
        """True when an acks=all write to every partition of the events topic can succeed now."""
        return await self.producer.ready(self.topic, self.min_insync)
