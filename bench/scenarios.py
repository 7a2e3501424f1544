"""The scenarios: each returns rows of (what, merlin's figure, the limit beside it)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime

import httpx

from bench.failover import failover
from bench.harness import Bench, Row, median_of, postgres_schema, projection_rate
from bench.live.scenario import live
from bench.live_settings import live_settings
from bench.pipeline import BODY, delivery, end_to_end, outage, percentile, recovery
from bench.soak import soak
from bench.vegeta import attack
from bench.wrk import get_paths_script, post_messages_script, run_wrk
from domain import MessageCreated, encode
from domain import headers as event_headers
from forwarder.settings import ForwarderSettings
from forwarder.worker import Forwarder
from kernel.position import partition_of
from kernel.producer import AsyncProducer
from merlin.heap import settled_heap
from merlin.local import LocalPostgres
from read_store.engines import create_engine
from read_store.migrate import upgrade
from read_store.projection import Record
from read_store.reader import ReadStore
from read_store.settings import ReadStoreSettings
from read_store.writer import ProjectionStore


async def write_path(bench: Bench, runs: int) -> list[Row]:
    """POST/s and latency with 64 connections, beside the HTTP stack alone and a raw producer."""
    seconds = 2 if bench.quick else 10
    connections = 64
    script = post_messages_script(rooms=100, body_bytes=200, headers=bench.headers())
    services = bench.services(f"sqlite:///{bench.workdir / 'unused.db'}")
    api = await services.write_api()
    try:
        merlin = await median_of(
            runs,
            lambda: asyncio.to_thread(lambda: run_wrk(api.url or "", script, connections, seconds).as_dict()),
        )
        # Latency below the peak, as users see it: open-loop load at 70% of the peak just measured.
        steady = await median_of(
            runs,
            lambda: _open_loop(
                api.url or "", round(0.7 * merlin["requests_per_second"]), seconds, bench.headers()
            ),
        )
    finally:
        services.stop_all()
    async with bench.null_write_api() as url:
        http = await median_of(
            runs, lambda: asyncio.to_thread(lambda: run_wrk(url, script, connections, seconds).as_dict())
        )
    count = 2_000 if bench.quick else 100_000
    producer = await median_of(runs, lambda: bench.limit("producer", count))
    return [
        Row("write", "POST /messages (acks=all)", "req/s", merlin["requests_per_second"],
            http["requests_per_second"], "same HTTP stack, no Kafka", merlin["p50_ms"], merlin["p99_ms"],
            {"errors": merlin["errors"] + merlin["non2xx"], "wrk_cpu_s": merlin["generator_cpu_seconds"]}),
        Row("write", "POST at 70% of that peak (open loop)", "req/s", steady["achieved_rate"],
            None, None, steady["p50_ms"], steady["p99_ms"],
            {"errors": steady["errors"], "vegeta_cpu_s": steady["vegeta_cpu_s"]}),
        Row("write", "HTTP stack alone (202, no Kafka)", "req/s", http["requests_per_second"],
            None, None, http["p50_ms"], http["p99_ms"], {"wrk_cpu_s": http["generator_cpu_seconds"]}),
        Row("write", "vs raw confluent-kafka producer", "msg/s", merlin["requests_per_second"],
            producer["messages_per_second"], "raw producer loop", producer["p50_ms"], producer["p99_ms"]),
    ]  # fmt: skip


async def _open_loop(url: str, rate: int, seconds: float, headers: dict[str, str]) -> dict[str, float]:
    paths = [f"/v1/rooms/room-{n}/messages" for n in range(100)]
    load = await asyncio.to_thread(attack, url, paths, BODY, rate, seconds, headers)
    latencies = [sent.latency_s for sent in load.results]
    return {
        "achieved_rate": len(load.results) / seconds,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": float(sum(1 for sent in load.results if sent.status != 202)),
        "vegeta_cpu_s": load.generator_cpu_seconds,
    }


async def _project(bench: Bench, url: str, schema: str | None, count: int) -> dict[str, float]:
    await upgrade(url, schema)
    store = ReadStoreSettings(url=url, db_schema=schema)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    forwarder = Forwarder(ForwarderSettings(group_id=group, metrics_port=0), bench.kafka, store, endpoints=[])
    engine = create_engine(url, schema=schema)
    reads = ReadStore(engine, bench.kafka.events_topic)
    return {"events_per_second": await projection_rate(forwarder, reads, count)}


async def _store_alone(url: str, schema: str | None, count: int) -> dict[str, float]:
    """``count`` events over 100 rooms applied to the projection store directly, 5,000 a batch."""
    await upgrade(url, schema)
    engine = create_engine(url, writer=True, schema=schema)
    store = ProjectionStore(engine, "bench-store-alone")
    now = datetime.now(UTC)
    records = [
        Record(
            n % 3,
            n // 3,
            MessageCreated(uuid.uuid4(), f"room-{n % 100}", uuid.uuid4(), "bench", "x" * 200, now),
        )
        for n in range(count)
    ]
    try:
        with settled_heap():  # as a forwarder process sets it: the records built so far are frozen
            started = time.perf_counter()
            for first in range(0, count, 5_000):
                await store.apply(records[first : first + 5_000])
            elapsed = time.perf_counter() - started
    finally:
        await store.close()
        await engine.dispose()
    return {"events_per_second": count / elapsed}


async def projection(bench: Bench, runs: int) -> list[Row]:
    """Projecting a pre-filled topic into SQLite and PostgreSQL, beside a raw decode-only consumer;
    and the PostgreSQL store alone, without Kafka or a forwarder."""
    count = 3_000 if bench.quick else 200_000
    await bench.limit("producer", count)
    raw = await median_of(runs, lambda: bench.limit("consumer", count))
    n = 0

    async def sqlite() -> dict[str, float]:
        nonlocal n
        n += 1
        return await _project(bench, f"sqlite:///{bench.workdir / f'projection-{n}.db'}", None, count)

    status = await asyncio.to_thread(LocalPostgres().start)

    async def postgres() -> dict[str, float]:
        async with postgres_schema(status) as (url, schema):
            return await _project(bench, url, schema, count)

    async def postgres_alone() -> dict[str, float]:
        async with postgres_schema(status) as (url, schema):
            return await _store_alone(url, schema, count)

    on_sqlite = await median_of(runs, sqlite)
    on_postgres = await median_of(runs, postgres)
    alone = await median_of(runs, postgres_alone)
    limit = raw["events_per_second"]
    return [
        Row("projection", f"{count:,} events into SQLite", "events/s", on_sqlite["events_per_second"],
            limit, "raw consumer, decode only"),
        Row("projection", f"{count:,} events into PostgreSQL", "events/s", on_postgres["events_per_second"],
            limit, "raw consumer, decode only"),
        Row("projection", f"{count:,} events, PostgreSQL store alone (no Kafka)", "events/s",
            alone["events_per_second"], None, None),
    ]  # fmt: skip


async def read_api(bench: Bench, runs: int) -> list[Row]:
    """GET by id and a page of 50, from a room of 100,000 messages."""
    messages = 2_000 if bench.quick else 100_000
    seconds = 2 if bench.quick else 10
    url = f"sqlite:///{bench.workdir / 'reads.db'}"
    await upgrade(url)
    engine = create_engine(url, writer=True)
    store = ProjectionStore(engine, bench.kafka.events_topic)
    now = datetime.now(UTC)
    ids: list[str] = []
    for start in range(0, messages, 5_000):
        events = [
            MessageCreated(uuid.uuid4(), "big", uuid.uuid4(), "bench", "x" * 200, now)
            for _ in range(min(5_000, messages - start))
        ]
        ids.extend(str(event.message_id) for event in events)
        await store.apply([Record(0, start + n, event) for n, event in enumerate(events)])
    await engine.dispose()
    services = bench.services(url)
    waiters = 200 if bench.quick else 2_000
    bound = str(waiters + 100)  # one caller parks them all: its own bound is the process's
    api = await services.read_api(
        MERLIN_READ_API_MAX_POSITION_WAITERS=bound, MERLIN_READ_API_MAX_POSITION_WAITERS_PER_CALLER=bound
    )
    waiting_at = await _unprojected_position(bench)
    rng = random.Random(1)
    by_id = get_paths_script([f"/v1/rooms/big/messages/{i}" for i in rng.sample(ids, 1000)], bench.headers())
    pages = get_paths_script(
        [f"/v1/rooms/big/messages?after_seq={rng.randrange(messages - 50)}&limit=50" for _ in range(1000)],
        bench.headers(),
    )
    try:
        one = await median_of(
            runs, lambda: asyncio.to_thread(lambda: run_wrk(api.url or "", by_id, 64, seconds).as_dict())
        )
        page = await median_of(
            runs, lambda: asyncio.to_thread(lambda: run_wrk(api.url or "", pages, 64, seconds).as_dict())
        )
        paths = [f"/v1/rooms/big/messages/{i}" for i in rng.sample(ids, 100)]
        alone = await median_of(
            runs, lambda: _reads_beside_waiters(api.url or "", paths, bench, 0, seconds, waiting_at)
        )
        beside = await median_of(
            runs, lambda: _reads_beside_waiters(api.url or "", paths, bench, waiters, seconds, waiting_at)
        )
    finally:
        services.stop_all()
    return [
        Row("read", f"GET one message ({messages:,} in the room)", "req/s", one["requests_per_second"],
            None, None, one["p50_ms"], one["p99_ms"], {"wrk_cpu_s": one["generator_cpu_seconds"]}),
        Row("read", "GET a page of 50", "req/s", page["requests_per_second"],
            None, None, page["p50_ms"], page["p99_ms"], {"wrk_cpu_s": page["generator_cpu_seconds"]}),
        Row("read", f"GET one message, 100/s, beside {waiters:,} reads waiting on after_position", "ms (p99)",
            beside["p99_ms"], alone["p99_ms"], "the same without them", beside["p50_ms"], beside["p99_ms"],
            {"alone_p50_ms": alone["p50_ms"]}),
    ]  # fmt: skip


async def _unprojected_position(bench: Bench) -> tuple[str, str]:
    """A room and a position of it in the log that no projection will reach (none runs here): an event
    written straight into the log, on a partition other than the one the store holds ``big``'s on."""
    partitions = bench.kafka.partitions
    room = next(r for r in (f"waiting-{n}" for n in range(1000)) if partition_of(r, partitions) != 0)
    event = MessageCreated(uuid.uuid4(), room, uuid.uuid4(), "bench", "never projected", datetime.now(UTC))
    producer = AsyncProducer(bench.kafka.client({"acks": "all"}))
    try:
        partition, offset = await producer.send(
            bench.kafka.events_topic, encode(event), key=room.encode(), headers=event_headers(event)
        )
    finally:
        await producer.close()
    return room, f"{partition}-{offset}"


async def _reads_beside_waiters(
    url: str, paths: list[str], bench: Bench, waiters: int, seconds: float, waiting_at: tuple[str, str]
) -> dict[str, float]:
    """GETs at 100/s, one at a time, while ``waiters`` reads wait for a position in the log that the
    projection never reaches."""
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=waiters + 10, max_keepalive_connections=waiters + 10)
    room, position = waiting_at

    async def wait(client: httpx.AsyncClient) -> None:
        while not stop.is_set():  # each waits out the read API's bound, then asks again
            answer = await client.get(f"{url}/v1/rooms/{room}/messages", params={"after_position": position})
            if answer.status_code != 503:  # a wait that ends otherwise measures nothing
                raise RuntimeError(f"a parked read answered {answer.status_code}: {answer.text}")

    latencies: list[float] = []
    async with httpx.AsyncClient(headers=bench.headers(), timeout=60, limits=limits) as client:
        waiting = [asyncio.create_task(wait(client)) for _ in range(waiters)]
        await asyncio.sleep(1 if waiters else 0)  # every waiter in place
        async with httpx.AsyncClient(headers=bench.headers(), timeout=30) as reader:
            end = time.perf_counter() + seconds
            n = 0
            while time.perf_counter() < end:
                started = time.perf_counter()
                answer = await reader.get(f"{url}{paths[n % len(paths)]}")
                answer.raise_for_status()
                latencies.append(time.perf_counter() - started)
                n += 1
                await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - started)))
        stop.set()
        for task in waiting:  # their reads are still waiting: not worth waiting for
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    return {"p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


SCENARIOS = {
    "write": write_path,
    "projection": projection,
    "end-to-end": end_to_end,
    "delivery": delivery,
    "outage": outage,
    "recovery": recovery,
    "read": read_api,
    "failover": failover,
    "settings": live_settings,
    "live": live,
}

# Run only when named (``--only soak``): half an hour by default.
LONG = {"soak": soak}
