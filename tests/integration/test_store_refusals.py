"""A record the read store refuses is isolated, the same way on both stores; a store outage loses nothing.

On the real broker, the real forwarder and real SQLite and PostgreSQL stores.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from domain import Event, MessageCreated, encode, headers
from kernel.position import Position
from kernel.settings import KafkaSettings
from merlin.local import LocalPostgres
from merlin.local.service_processes import Services, eventually
from read_store.dialect import NUL_REFUSED
from read_store.engines import create_engine
from read_store.migrate import upgrade
from read_store.reader import ReadStore
from tests.conftest import create_schema
from webhooks.dead_letters import header_map


def produce(kafka: KafkaSettings, events: Sequence[Event]) -> list[Position]:
    """Put ``events`` on the events topic by hand (bypassing the write API); their positions.

    Idempotent, as the services' producers are: without it a retried request (a broker still
    setting up a new topic answers "not leader") lands after later ones, and a room's records
    are not in the order given.
    """
    producer = Producer(kafka.client({"acks": "all", "enable.idempotence": True}))
    positions: list[Position] = []

    def landed(error: Any, message: Any) -> None:
        assert error is None, error
        positions.append(Position(message.partition(), message.offset()))

    for event in events:
        producer.produce(
            kafka.events_topic, key=event.room_id.encode(), value=encode(event),
            headers=[(name, value) for name, value in headers(event)],
            on_delivery=landed,
        )  # fmt: skip
    assert producer.flush(10) == 0
    return positions


def dead_letters(kafka: KafkaSettings) -> list[dict[str, str]]:
    """The headers, as text, of every record on the dead-letter topic (read to its end)."""
    consumer = Consumer(kafka.client({"group.id": f"dlq-{uuid.uuid4()}", "enable.auto.commit": False}))
    found: list[dict[str, str]] = []
    try:
        for partition in range(kafka.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(kafka.dead_letter_topic, partition), timeout=10
            )
            if high <= low:
                continue
            consumer.assign([TopicPartition(kafka.dead_letter_topic, partition, low)])
            for _ in range(high - low):
                message = consumer.poll(10)
                assert message is not None, "the dead-letter topic did not answer"
                assert message.error() is None, message.error()
                found.append(header_map(message.headers()))
    finally:
        consumer.close()
    return found


def event(room: str, body: str) -> MessageCreated:
    return MessageCreated(uuid.uuid4(), room, uuid.uuid4(), "u1", body, datetime.now(UTC))


async def test_a_record_the_store_refuses_is_isolated_and_both_stores_agree(
    sqlite_services: Services, postgres_services: Services
) -> None:
    # One log (the SQLite fixture's topics) feeds both stores.
    postgres_services.kafka = kafka = sqlite_services.kafka
    before, refused, after = event("r1", "before"), event("r1", "a\x00b"), event("r1", "after")
    written = produce(kafka, [before, refused, after])
    assert len({p.partition for p in written}) == 1  # one room: one partition, one batch
    sqlite_services.forwarder(MERLIN_FORWARDER_GROUP_ID=f"sqlite-{uuid.uuid4()}")
    postgres_services.forwarder(MERLIN_FORWARDER_GROUP_ID=f"postgres-{uuid.uuid4()}")
    write = await sqlite_services.write_api()
    async with httpx.AsyncClient(headers=sqlite_services.headers(), timeout=30) as client:
        answer = await client.post(
            f"{write.url}/v1/rooms/r1/messages", json={"sender_id": "u1", "body": "later"}
        )
        assert answer.status_code == 202, answer.text
    last = Position.parse(answer.json()["position"])

    views: list[tuple[list[dict[str, Any]], list[tuple[str, int]]]] = []
    for services in (sqlite_services, postgres_services):
        reads = ReadStore(create_engine(services.store_url, schema=services.store_schema), kafka.events_topic)
        try:
            assert await reads.wait_for(last, timeout=60), f"{services.store_url} behind"
            outcomes = [await reads.outcome(str(e.event_id)) for e in (before, refused, after)]
            page = await reads.page("r1", None, None, 10)
        finally:
            await reads.close()
        known = [outcome for outcome in outcomes if outcome is not None]
        assert len(known) == 3
        for outcome in known:
            outcome.pop("recorded_at")
        views.append((known, [(m["body"], m["seq"]) for m in page]))
    assert views[0] == views[1]
    agreed, rows = views[0]
    assert [o["status"] for o in agreed] == ["applied", "rejected", "applied"]
    assert agreed[1]["rejection"] == {"code": "store_refused", "reason": NUL_REFUSED}
    assert rows == [("before", 1), ("after", 2), ("later", 3)]

    # Each forwarder dead-lettered the refused record once, with its reason and place.
    letters = dead_letters(kafka)
    assert len(letters) == 2
    for letter in letters:
        assert letter["merlin.dlq.stage"] == "store"
        assert letter["merlin.dlq.reason"] == NUL_REFUSED
        assert letter["merlin.dlq.offset"] == str(written[1].offset)
        assert letter["event_id"] == str(refused.event_id)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this module's own: stopping the shared one would fail whatever other
    test uses it meanwhile (the suite runs on several workers)."""
    server = LocalPostgres(port=int(os.environ.get("TEST_REFUSALS_POSTGRES_PORT", "25443")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def own_postgres_services(
    kafka_settings: KafkaSettings, own_postgres: LocalPostgres, tmp_path: Path
) -> AsyncIterator[Services]:
    dsn = (await asyncio.to_thread(own_postgres.status)).url("merlin", driver="postgresql")
    schema = f"refusals_{uuid.uuid4().hex[:8]}"
    await create_schema(dsn, schema)
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    await upgrade(url, schema)
    services = Services(kafka_settings, url, tmp_path, schema)
    yield services
    services.stop_all()


async def test_postgresql_stopped_for_20_s_mid_stream_dead_letters_nothing_and_applies_everything_once(
    own_postgres_services: Services, own_postgres: LocalPostgres
) -> None:
    postgres_services, postgres = own_postgres_services, own_postgres
    kafka = postgres_services.kafka
    rooms = [f"room-{n}" for n in range(5)]
    backlog = [event(rooms[n % 5], f"m{n}") for n in range(20_000)]
    # The rest of the backlog is written once the positions are held: however fast the projector,
    # its next batch then waits on them.
    written = produce(kafka, backlog[:2_000])
    # Small batches: many transactions, so the stop lands in the middle of one.
    forwarder = postgres_services.forwarder(MERLIN_FORWARDER_BATCH_MAX="200")
    reads = ReadStore(
        create_engine(postgres_services.store_url, schema=postgres_services.store_schema), kafka.events_topic
    )
    try:

        async def projecting() -> bool | None:
            applied = await reads.positions()
            return True if sum(offset + 1 for offset in applied.values()) >= 2_000 else None

        await eventually(projecting, 60, "the projection under way")
        # Hold the positions, so the projector's next transaction waits inside its FOR UPDATE:
        # stopping the server now kills a batch in flight, not an idle connection.
        dsn = postgres_services.store_url.replace("+asyncpg", "")
        holder = await asyncpg.connect(dsn)
        try:
            holder_tx = holder.transaction()
            await holder_tx.start()
            await holder.execute(f'SELECT * FROM "{postgres_services.store_schema}".positions FOR UPDATE')
            written += produce(kafka, backlog[2_000:])

            async def projector_waiting() -> bool | None:
                waiting = await holder.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
                return True if waiting else None

            await eventually(projector_waiting, 30, "a batch waiting inside its transaction")
            await asyncio.to_thread(postgres.stop)
        finally:
            holder.terminate()  # else, after a failure, the schema's teardown would wait on its lock
        try:
            await asyncio.sleep(20)  # the outage itself, not a wait for a result
            assert forwarder.process.poll() is None, forwarder.output()
        finally:
            await asyncio.to_thread(postgres.start)

        last: dict[int, int] = {}
        for position in written:
            last[position.partition] = max(last.get(position.partition, -1), position.offset)

        async def caught_up() -> bool | None:
            return all([await reads.wait_for(Position(p, o), 0.5) for p, o in last.items()]) or None

        await eventually(caught_up, 120, "every record applied after the store came back")
        for room in rooms:
            page = await reads.page(room, None, None, 10_000)
            expected = [e.body for e in backlog if e.room_id == room]
            assert [m["body"] for m in page] == expected  # each once, in log order
            assert [m["seq"] for m in page] == list(range(1, len(expected) + 1))
            assert {m["version"] for m in page} == {1}
    finally:
        await reads.close()
    connection = await asyncpg.connect(dsn)
    try:
        statuses = await connection.fetch(
            f'SELECT status, code, count(*) FROM "{postgres_services.store_schema}".event_outcomes'
            " GROUP BY status, code"
        )
    finally:
        await connection.close()
    assert [tuple(row) for row in statuses] == [("applied", None, len(backlog))]
    assert dead_letters(kafka) == []
    crashes = [line for line in forwarder.output().splitlines() if '"stage_crashed"' in line]
    assert crashes, "the outage was felt"
    assert "ConnectionRefusedError" not in crashes[0], crashes[0]  # the first: the batch cut off mid-flight
