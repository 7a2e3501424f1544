"""Where a new endpoint's group starts: no record written after its start time is skipped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from confluent_kafka import TopicPartition

from forwarder.consumer import EventConsumer
from forwarder.metrics import ForwarderMetrics


class _WrittenMeanwhile:
    """A consumer of one empty partition that gets its first record just after the time lookup."""

    def __init__(self) -> None:
        self.end = 0
        self.committed: list[TopicPartition] = []

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, self.end

    def offsets_for_times(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.end = 1  # the record lands now: after the lookup found nothing at or after the time
        return [TopicPartition(p.topic, p.partition, -1) for p in partitions]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        self.committed = offsets


async def test_a_record_written_during_the_lookup_is_not_skipped() -> None:
    since = datetime(2026, 11, 24, tzinfo=UTC)
    source = EventConsumer({"group.id": "g"}, "events", ForwarderMetrics(), since=since)
    consumer = _WrittenMeanwhile()
    starts = source._from_time(consumer, {0: -1001})  # type: ignore[arg-type]
    assert starts == {0: 0}
    assert [(tp.partition, tp.offset) for tp in consumer.committed] == [(0, 0)]
