"""The real broker behaves as merlin relies on: ordered idempotent writes, rebalances, durable offsets."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from kernel.settings import KafkaSettings


def _producer(settings: KafkaSettings) -> Producer:
    return Producer(settings.client({"acks": "all", "enable.idempotence": True, "linger.ms": 5}))


def _consumer(settings: KafkaSettings, group: str) -> Consumer:
    return Consumer(
        settings.client(
            {
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
            }
        )
    )


def _text(data: bytes | None) -> str:
    assert data is not None
    return data.decode()


def _poll_until(consumers: list[Consumer], done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not reached in time"
        for consumer in consumers:
            message = consumer.poll(0.1)
            assert message is None or message.error() is None, message and message.error()


def test_idempotent_acks_all_writes_come_back_in_order_per_key(kafka_settings: KafkaSettings) -> None:
    producer = _producer(kafka_settings)
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)

    rooms = [f"room-{n}" for n in range(5)]
    for n in range(200):
        for room in rooms:
            producer.produce(
                kafka_settings.events_topic, key=room, value=f"{room}:{n}", on_delivery=delivered
            )
    assert producer.flush(30) == 0
    assert failures == []

    consumer = _consumer(kafka_settings, f"g-{uuid.uuid4().hex}")
    consumer.subscribe([kafka_settings.events_topic])
    seen: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    deadline = time.monotonic() + 30
    while sum(map(len, seen.values())) < 1000:
        assert time.monotonic() < deadline, "did not read back every record"
        for message in consumer.consume(500, 0.5):
            assert message.error() is None
            room, seq = _text(message.value()).split(":")
            assert _text(message.key()) == room
            seen[room].append(int(seq))
            partitions[room].add(message.partition() or 0)
    consumer.close()
    assert dict(seen) == {room: list(range(200)) for room in rooms}
    assert all(len(used) == 1 for used in partitions.values()), partitions


def test_a_second_consumer_in_the_group_rebalances_the_first(kafka_settings: KafkaSettings) -> None:
    group = f"g-{uuid.uuid4().hex}"
    events: list[tuple[str, str, list[int]]] = []

    def subscribe(consumer: Consumer, name: str) -> None:
        def on_assign(_consumer: Consumer, assigned: list[TopicPartition]) -> None:
            events.append((name, "assign", sorted(tp.partition for tp in assigned)))

        def on_revoke(_consumer: Consumer, revoked: list[TopicPartition]) -> None:
            events.append((name, "revoke", sorted(tp.partition for tp in revoked)))

        consumer.subscribe([kafka_settings.events_topic], on_assign=on_assign, on_revoke=on_revoke)

    first = _consumer(kafka_settings, group)
    subscribe(first, "first")
    _poll_until([first], lambda: ("first", "assign", [0, 1, 2]) in events)

    second = _consumer(kafka_settings, group)
    subscribe(second, "second")

    def split_between_both() -> bool:
        latest: dict[str, list[int]] = {}
        for name, kind, parts in events:
            latest[name] = parts if kind == "assign" else []
        both = latest.get("first", []), latest.get("second", [])
        return all(both) and sorted(both[0] + both[1]) == [0, 1, 2]

    _poll_until([first, second], split_between_both)
    assert ("first", "revoke", [0, 1, 2]) in events
    second.close()
    first.close()


def test_committed_offsets_survive_a_consumer_restart(kafka_settings: KafkaSettings) -> None:
    topic = kafka_settings.events_topic
    producer = _producer(kafka_settings)
    for n in range(10):
        producer.produce(topic, key="k", value=str(n).encode(), partition=0)
    assert producer.flush(30) == 0
    group = f"g-{uuid.uuid4().hex}"

    first = _consumer(kafka_settings, group)
    first.assign([TopicPartition(topic, 0)])
    read: list[Message] = []
    deadline = time.monotonic() + 30
    while len(read) < 4:
        assert time.monotonic() < deadline
        read.extend(first.consume(4 - len(read), 0.5))
    assert [_text(m.value()) for m in read] == ["0", "1", "2", "3"]
    first.commit(offsets=[TopicPartition(topic, 0, (read[-1].offset() or 0) + 1)], asynchronous=False)
    first.close()

    second = _consumer(kafka_settings, group)
    committed = second.committed([TopicPartition(topic, 0)], timeout=10)
    assert committed[0].offset == 4
    second.assign(committed)
    resumed: list[Message] = []
    deadline = time.monotonic() + 30
    while not resumed:
        assert time.monotonic() < deadline
        resumed = second.consume(1, 0.5)
    assert _text(resumed[0].value()) == "4"
    second.close()
