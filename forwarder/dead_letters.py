"""The dead-letter topic: the original record, untouched, with why and where it failed in its headers."""

from __future__ import annotations

from confluent_kafka import Message

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
