"""An endpoint's consumer group through Kafka's admin API: its offsets, whether it is empty, moving it."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from datetime import datetime
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from kernel.admin_calls import answer
from kernel.errors import InfrastructureError
from kernel.settings import ClientConfig

T = TypeVar("T")
_TIMEOUT = 10.0


async def _result(future: Future[T]) -> T:
    return await answer(future, "Kafka's admin API", _TIMEOUT)


class Groups:
    """The consumer groups of the endpoints, on ``topic``."""

    def __init__(self, config: ClientConfig, topic: str) -> None:
        self.config = config
        self.topic = topic
        self.admin = AdminClient(config)

    async def partitions(self) -> list[int]:
        metadata = await asyncio.to_thread(self.admin.list_topics, self.topic, _TIMEOUT)
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None:
            raise InfrastructureError(f"the events topic {self.topic} is not there")
        return sorted(found.partitions)

    async def committed(self, group: str, partitions: list[int]) -> dict[int, int | None]:
        """Per partition, the group's committed offset (None where it never committed)."""
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(self.topic, p) for p in partitions])
        futures = self.admin.list_consumer_group_offsets([request], request_timeout=_TIMEOUT)
        answer: Any = await _result(futures[group])
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in answer.topic_partitions}

    async def _offsets(self, partitions: list[int], spec: Any) -> dict[int, int]:
        futures = self.admin.list_offsets(
            {TopicPartition(self.topic, p): spec for p in partitions}, request_timeout=_TIMEOUT
        )
        return {tp.partition: (await _result(future)).offset for tp, future in futures.items()}

    async def ends(self, partitions: list[int]) -> dict[int, int]:
        return await self._offsets(partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]

    async def at_time(self, partitions: list[int], moment: datetime) -> dict[int, int]:
        """Per partition, the first offset written at or after ``moment`` (the end where there is none)."""
        spec = OffsetSpec.for_timestamp(int(moment.timestamp() * 1000))
        found = await self._offsets(partitions, spec)
        ends = await self.ends(partitions)
        return {p: offset if offset >= 0 else ends[p] for p, offset in found.items()}

    async def empty(self, group: str) -> bool:
        """True when no consumer is a member of ``group``."""
        futures = self.admin.describe_consumer_groups([group], request_timeout=_TIMEOUT)
        description: Any = await _result(futures[group])
        return description.state in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD)

    async def move(self, group: str, offsets: dict[int, int]) -> None:
        """Set ``group``'s committed offsets (Kafka allows it only while the group is empty)."""
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(self.topic, p, offset) for p, offset in sorted(offsets.items())]
        )
        futures = self.admin.alter_consumer_group_offsets([request], request_timeout=_TIMEOUT)
        await _result(futures[group])

    async def timestamps(self, offsets: dict[int, int]) -> dict[int, float]:
        """Per partition, when the record at its offset was written (seconds since the epoch)."""
        if not offsets:
            return {}
        return await asyncio.to_thread(self._read_timestamps, offsets)

    def _read_timestamps(self, offsets: dict[int, int]) -> dict[int, float]:
        consumer = Consumer(
            {**self.config, "group.id": f"{self.topic}.admin-reader", "enable.auto.commit": False}
        )
        try:
            consumer.assign(
                [TopicPartition(self.topic, p, o if o > 0 else OFFSET_BEGINNING) for p, o in offsets.items()]
            )
            found: dict[int, float] = {}
            for _ in range(20):  # at most about 2 s
                for message in consumer.consume(len(offsets), 0.1):
                    partition = message.partition()
                    if message.error() is None and partition is not None and partition not in found:
                        _kind, millis = message.timestamp()
                        found[partition] = millis / 1000
                if len(found) == len(offsets):
                    break
            return found
        finally:
            consumer.close()
