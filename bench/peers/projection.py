"""Projecting the events into PostgreSQL: the Debezium JDBC sink beside merlin's forwarders.

Not the same work: Debezium upserts one flat row per event (at least once, the upsert absorbs
replays), from records three times the size because each carries its schema; merlin validates
each event, applies the projection's rules and writes the message, its outcome, the room's
sequence and its own positions in one transaction (exactly once).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from bench.harness import Bench, postgres_schema
from bench.peers.forwarders import check_running, merlin_forwarders
from bench.peers.worker import ConnectWorker
from kernel.settings import KafkaSettings
from merlin.local.postgres import PostgresStatus
from read_store.engines import create_engine
from read_store.migrate import upgrade
from read_store.reader import ReadStore

JDBC_SINK = "io.debezium.connector.jdbc.JdbcSinkConnector"
_POLL = 0.05
_TIMEOUT = 900.0


def jdbc_sink(topic: str, table: str, tasks: int, postgres: PostgresStatus) -> dict[str, str]:
    """The connector's config: upsert on message_id into ``table``, which it creates."""
    return {
        "connector.class": JDBC_SINK,
        "tasks.max": str(tasks),
        "topics": topic,
        "connection.url": f"jdbc:postgresql://127.0.0.1:{postgres.port}/merlin_test",
        "connection.username": postgres.user,
        "connection.password": "",
        "insert.mode": "upsert",
        "primary.key.mode": "record_value",
        "primary.key.fields": "message_id",
        "schema.evolution": "basic",
        "delete.enabled": "false",
        "collection.name.format": table,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        # The envelope's payload is a nested struct; the sink writes flat rows only.
        "transforms": "flatten",
        "transforms.flatten.type": "org.apache.kafka.connect.transforms.Flatten$Value",
        "transforms.flatten.delimiter": "_",
    }


async def debezium(
    worker: ConnectWorker, topic: str, count: int, tails: list[str], tasks: int, postgres: PostgresStatus
) -> dict[str, float]:
    """Connector POST → the last of ``count`` rows visible in a fresh table: events/s."""
    suffix = uuid.uuid4().hex[:8]
    table, name = f"peers_jdbc_{suffix}", f"{worker.name}-jdbc-{suffix}-t{tasks}"
    db = await asyncpg.connect(postgres.url("merlin_test", driver="postgresql"))
    try:
        started = time.perf_counter()
        await worker.create(name, jdbc_sink(topic, table, tasks, postgres))
        try:
            first, last = await _rows(db, table, count, tails, lambda: worker.check(name))
        finally:
            await worker.delete(name)
    finally:
        await db.execute(f'DROP TABLE IF EXISTS "{table}"')
        await db.close()
    return {"events_per_second": count / (last - started), "first_row_s": first - started}


async def _rows(
    db: asyncpg.Connection, table: str, count: int, tails: list[str], check: Callable[[], Awaitable[None]]
) -> tuple[float, float]:
    """When the first row, then all ``count``, were visible.

    Each round looks up each room's last event by primary key, which costs little beside
    the sink's writes; ``count(*)`` confirms once they are all there.
    """
    probe = (
        f'SELECT (SELECT count(*) FROM "{table}" WHERE message_id = ANY($1::text[])), '
        f'EXISTS (SELECT FROM "{table}")'
    )
    first: float | None = None
    deadline = time.monotonic() + _TIMEOUT
    rounds = 0
    while True:
        try:
            row = await db.fetchrow(probe, tails)
            found, some = (row[0], row[1]) if row else (0, False)
        except asyncpg.UndefinedTableError:  # the sink creates it with its first batch
            found, some = 0, False
        now = time.perf_counter()
        if some and first is None:
            first = now
        if found == len(tails) and await db.fetchval(f'SELECT count(*) FROM "{table}"') >= count:
            return first or now, now
        rounds += 1
        if rounds % 20 == 0:
            await check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count:,} rows not in {table} within {_TIMEOUT:.0f} s")
        await asyncio.sleep(_POLL)


async def warm_debezium(worker: ConnectWorker, topic: str, rows: int, postgres: PostgresStatus) -> None:
    """Run the sink until ``rows`` rows are written, then drop it: the worker's JIT and Hibernate warm."""
    suffix = uuid.uuid4().hex[:8]
    table, name = f"peers_warm_{suffix}", f"{worker.name}-warm-jdbc-{suffix}"
    db = await asyncpg.connect(postgres.url("merlin_test", driver="postgresql"))
    try:
        await worker.create(name, jdbc_sink(topic, table, 1, postgres))
        try:
            deadline = time.monotonic() + _TIMEOUT
            while time.monotonic() < deadline:
                try:
                    if await db.fetchval(f'SELECT count(*) FROM "{table}"') >= rows:
                        return
                except asyncpg.UndefinedTableError:
                    pass
                await worker.check(name)
                await asyncio.sleep(0.5)
        finally:
            await worker.delete(name)
    finally:
        await db.execute(f'DROP TABLE IF EXISTS "{table}"')
        await db.close()


async def merlin(
    bench: Bench, kafka: KafkaSettings, count: int, processes: int, postgres: PostgresStatus, prefix: str
) -> dict[str, float]:
    """``processes`` forwarders started → all ``count`` events projected into a fresh schema: events/s.

    As the projection scenario, but with forwarder processes; their start-up is in the figure,
    as the connector's is in Debezium's. Their group's id starts with ``prefix``.
    """
    async with postgres_schema(postgres) as (url, schema):
        await upgrade(url, schema)
        services = bench.services(url, schema, kafka=kafka)
        reads = ReadStore(create_engine(url, schema=schema), kafka.events_topic)
        group = f"{prefix}-forwarders-{uuid.uuid4().hex[:8]}"
        try:
            started = time.perf_counter()
            workers = merlin_forwarders(services, processes, MERLIN_FORWARDER_GROUP_ID=group)
            first: float | None = None
            deadline = time.monotonic() + _TIMEOUT
            while True:
                projected = sum(offset + 1 for offset in (await reads.positions()).values())
                now = time.perf_counter()
                if projected and first is None:
                    first = now
                if projected >= count:
                    break
                check_running(workers)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{count:,} events not projected within {_TIMEOUT:.0f} s")
                await asyncio.sleep(_POLL)
        finally:
            services.stop_all()
            await reads.close()
    return {"events_per_second": count / (now - started), "first_row_s": (first or now) - started}
