"""The dead-letter topic: the original record, untouched, with why and where it failed in its headers."""

from __future__ import annotations

from confluent_kafka import Message

from forwarder.dispatcher import Job
from merlin.producer import AsyncProducer


class DeadLetters:
    def __init__(self, producer: AsyncProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def send(self, record: Message, stage: str, reason: str) -> None:
        """Put ``record`` on the dead-letter topic; return once the broker has it."""
        headers = [
            *(record.headers() or []),
            ("merlin.dlq.stage", stage.encode()),
            ("merlin.dlq.reason", reason.encode()),
            ("merlin.dlq.topic", (record.topic() or "").encode()),
            ("merlin.dlq.partition", str(record.partition()).encode()),
            ("merlin.dlq.offset", str(record.offset()).encode()),
        ]
        await self.producer.send(self.topic, record.value(), key=record.key(), headers=headers)

    async def send_failed_delivery(self, job: Job, endpoint: str, reason: str, document: bytes) -> None:
        """Record a delivery that failed for good: the event, the endpoint, the attempts, the reason."""
        headers = [
            ("merlin.dlq.stage", b"delivery"),
            ("merlin.dlq.reason", reason.encode()),
            ("merlin.dlq.endpoint", endpoint.encode()),
            ("merlin.dlq.partition", str(job.partition).encode()),
            ("merlin.dlq.offset", str(job.offset).encode()),
            ("event_id", job.event_id.encode()),
        ]
        await self.producer.send(self.topic, document, key=job.room_id.encode(), headers=headers)
