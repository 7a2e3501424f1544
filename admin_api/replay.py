"""Replay dead letters: re-deliver an endpoint's dead-lettered events, in their log order per room.

The dead-letter topic is read from its start to its end (assigned, no group).
A delivery dead letter of the endpoint (optionally of one room, dead-lettered
within a time range) is sent again, signed, with its event id as idempotency
key, under the endpoint's retry policy. A record dead-lettered because it is
no event, or because the read store refused it, was never applied: it cannot
be delivered, and the answer says so.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from kernel.errors import InfrastructureError
from kernel.settings import ClientConfig
from webhooks.calls import Send
from webhooks.dead_letters import DELIVERY_STAGE, header_map
from webhooks.endpoints import Endpoint
from webhooks.sending import Deliverer, DeliveryFailed


@dataclass(frozen=True, slots=True)
class DeadLetter:
    stage: str
    room_id: str
    partition: int  # where the event is in the events topic
    offset: int
    event_id: str | None
    endpoint: str | None
    reason: str
    event: bytes | None  # the envelope, for a delivery dead letter


@dataclass(frozen=True, slots=True)
class Wanted:
    endpoint: str
    room_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, room_id: str, written: float) -> bool:
        if self.room_id is not None and room_id != self.room_id:
            return False
        if self.since is not None and written < self.since.timestamp():
            return False
        return self.until is None or written <= self.until.timestamp()


def read_dead_letters(
    config: ClientConfig, topic: str, wanted: Wanted, timeout: float = 30.0
) -> list[DeadLetter]:
    """The dead letters ``wanted`` asks for, from the whole topic, in the events' log order."""
    consumer = Consumer(
        {**config, "group.id": f"{topic}.replay", "enable.auto.commit": False, "enable.partition.eof": True}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise InfrastructureError(f"no dead-letter topic {topic}")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in found.partitions])
        waiting = set(found.partitions)
        letters: list[DeadLetter] = []
        idle = 0
        while waiting:
            messages = consumer.consume(1000, 1.0)
            idle = 0 if messages else idle + 1
            if idle > timeout:
                raise InfrastructureError(f"reading {topic} timed out")
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        waiting.discard(message.partition())
                    continue
                letter = _parse(message)
                if letter is None or not wanted.matches(letter.room_id, message.timestamp()[1] / 1000):
                    continue
                if letter.stage != DELIVERY_STAGE or letter.endpoint == wanted.endpoint:
                    letters.append(letter)
        return sorted(letters, key=lambda letter: (letter.partition, letter.offset))
    finally:
        consumer.close()


def _parse(message: Any) -> DeadLetter | None:
    headers = header_map(message.headers())
    stage = headers.get("merlin.dlq.stage")
    if stage is None:
        return None
    try:
        partition, offset = (
            int(headers.get("merlin.dlq.partition", "")),
            int(headers.get("merlin.dlq.offset", "")),
        )
    except ValueError:
        return None
    event = None
    if stage == DELIVERY_STAGE:
        try:
            event = orjson.dumps(orjson.loads(message.value() or b"{}")["event"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
    return DeadLetter(
        stage=stage,
        room_id=(message.key() or b"").decode(errors="replace"),
        partition=partition,
        offset=offset,
        event_id=headers.get("event_id"),
        endpoint=headers.get("merlin.dlq.endpoint"),
        reason=headers.get("merlin.dlq.reason", ""),
        event=event,
    )


async def replay(send: Send, endpoint: Endpoint, letters: list[DeadLetter], most: int) -> dict[str, Any]:
    """Deliver ``letters`` again (up to ``most``): rooms side by side, each room's events in order."""
    refused = [
        {
            "partition": letter.partition,
            "offset": letter.offset,
            "room_id": letter.room_id,
            "stage": letter.stage,
            "reason": f"not replayable: {_why(letter)}",
        }
        for letter in letters
        if letter.stage != DELIVERY_STAGE
    ]
    seen: set[str] = set()
    chosen: list[DeadLetter] = []
    for letter in letters:
        if letter.stage == DELIVERY_STAGE and letter.event_id and letter.event_id not in seen:
            seen.add(letter.event_id)  # dead-lettered twice (say, after a rewind): sent once
            chosen.append(letter)
    more = len(chosen) > most
    by_room: dict[str, list[DeadLetter]] = defaultdict(list)
    for letter in chosen[:most]:
        by_room[letter.room_id].append(letter)
    deliverer = Deliverer(send, endpoint)
    delivered: list[str] = []
    failed: list[dict[str, str]] = []
    gate = asyncio.Semaphore(endpoint.max_in_flight)

    async def room(letters: list[DeadLetter]) -> None:
        async with gate:
            for letter in letters:
                assert letter.event_id is not None
                assert letter.event is not None
                try:
                    await deliverer.deliver(letter.event_id, letter.event)
                    delivered.append(letter.event_id)
                except DeliveryFailed as exc:
                    failed.append(
                        {"event_id": letter.event_id, "room_id": letter.room_id, "reason": exc.reason}
                    )
                    return  # later events of the room wait, in order, for another replay

    await asyncio.gather(*(room(letters) for letters in by_room.values()))
    return {
        "endpoint": endpoint.name,
        "matched": len(chosen),
        "delivered": delivered,
        "failed": failed,
        "refused": refused,
        "more": more,
    }


def _why(letter: DeadLetter) -> str:
    if letter.stage == "store":
        return f"the read store refused this record ({letter.reason}); only applied events are delivered"
    return f"this record is no event ({letter.reason}); it was never applied"
