"""merlin beside the Kafka Connect pipelines a team would otherwise run, one after the other.

Same broker, PostgreSQL, events and downstream for both sides; N forwarder processes beside
tasks.max = N. One Connect worker serves every connector. Before the timed runs, each sink runs
once untimed (a long-running worker has its JIT and libraries warm); merlin's forwarders start
fresh for every run, as in the other scenarios.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

from bench.harness import PEERS, Bench, Row
from bench.live import scenario as live_rooms
from bench.peers import delivery, projection
from bench.peers.events import created, last_of_each_room, order, produce, with_schema
from bench.peers.groups import delete_groups
from bench.peers.jars import fetch
from bench.peers.worker import ConnectWorker, connect_worker, stop
from domain import MessageCreated, encode
from kernel.settings import KafkaSettings
from kernel.topics import TopicPlan, delete_topics, ensure_topics
from merlin.local import LocalPostgres
from merlin.local.postgres import PostgresStatus

CONNECT = "Connect 4.3.1"
JDBC = f"{CONNECT} + Debezium JDBC sink 3.6.0"
HTTP = f"{CONNECT} + Camel HTTP sink 0.11.0"


async def peers(bench: Bench, runs: int) -> list[Row]:
    """Projection into PostgreSQL and delivery to the downstream, merlin beside each peer, N = 1, 2;
    then live rooms, merlin's read API beside Centrifugo (``bench.live``).

    The peers run first, then the worker is stopped and merlin runs: each side has the machine
    to itself (a Connect worker left up beside merlin halved its projection here).
    """
    sizes = (1,) if bench.quick else (1, 2)
    async with _stage(bench) as stage:
        if not bench.quick:
            await stage.warm_up()
        debezium = {n: await _runs(runs, partial(stage.debezium, n)) for n in sizes}
        camel = {n: await _runs(runs, partial(stage.camel, n)) for n in sizes}
        await stop(stage.worker)
        projected = {n: await _runs(runs, partial(stage.merlin_project, n)) for n in sizes}
        delivered = {n: await _runs(runs, partial(stage.merlin_deliver, n)) for n in sizes}
    rows: list[Row] = []
    for n in sizes:
        result = {"merlin": projected[n], "peer": debezium[n]}
        rows.append(
            Row(PEERS, f"{len(stage.projected):,} events into PostgreSQL, N = {n}", "events/s",
                result["merlin"]["events_per_second"], result["peer"]["events_per_second"],
                f"{JDBC}, tasks.max={n}", extra=_extra(result, "first_row_s"))
        )  # fmt: skip
    for n in sizes:
        result = {"merlin": delivered[n], "peer": camel[n]}
        rows.append(
            Row(PEERS, f"{len(stage.delivered):,} events, 100 rooms, to the downstream, N = {n}",
                "deliveries/s", result["merlin"]["deliveries_per_second"],
                result["peer"]["deliveries_per_second"], f"{HTTP}, tasks.max={n}",
                extra=_extra(result, "first_s", "inversions", "duplicates", "refused"))
        )  # fmt: skip
    # After the worker has stopped: Centrifugo and merlin's services each have the machine to themselves.
    rows.extend(await live_rooms.live_peers(bench, runs))
    return rows


@dataclass
class _Stage:
    """What both sides share: the events on their topics, the worker, PostgreSQL, the downstream."""

    bench: Bench
    name: str  # the run's: every group made starts with it (the connectors' with connect-<name>)
    worker: ConnectWorker
    postgres: PostgresStatus
    downstream: str
    projected: list[MessageCreated]
    merlin_projects: KafkaSettings  # topics with merlin's envelopes of ``projected``
    jdbc_topic: str  # ``projected`` with their schema, for the JDBC sink
    delivered: list[MessageCreated]
    deliveries: KafkaSettings  # topics with merlin's envelopes of ``delivered``, for both sides

    async def warm_up(self) -> None:
        await projection.warm_debezium(self.worker, self.jdbc_topic, len(self.projected) // 5, self.postgres)
        await delivery.warm_camel(
            self.worker, self.deliveries.events_topic, self.downstream, len(self.delivered) // 2
        )

    async def debezium(self, n: int) -> dict[str, float]:
        tails = last_of_each_room(self.projected)
        return await projection.debezium(
            self.worker, self.jdbc_topic, len(self.projected), tails, n, self.postgres
        )

    async def merlin_project(self, n: int) -> dict[str, float]:
        return await projection.merlin(
            self.bench, self.merlin_projects, len(self.projected), n, self.postgres, self.name
        )

    async def camel(self, n: int) -> dict[str, float]:
        places = order(self.delivered)
        return await delivery.camel(
            self.worker, self.deliveries.events_topic, self.downstream, len(self.delivered), places, n
        )

    async def merlin_deliver(self, n: int) -> dict[str, float]:
        places = order(self.delivered)
        return await delivery.merlin(
            self.bench, self.deliveries, self.downstream, len(self.delivered), places, n, self.name
        )


@asynccontextmanager
async def _stage(bench: Bench) -> AsyncIterator[_Stage]:
    """The worker started, the events written; all of it removed at the end."""
    projected, delivered = (2_000, 1_000) if bench.quick else (200_000, 20_000)
    jars = await asyncio.to_thread(fetch)
    postgres = await asyncio.to_thread(LocalPostgres().start)
    name = f"peers-{uuid.uuid4().hex[:8]}"
    try:
        async with (
            connect_worker(jars, bench.kafka, bench.workdir, name) as worker,  # starts while topics fill
            bench.topics() as merlin_projects,
            bench.topics() as deliveries,
            _topic(bench.kafka, f"{name}.jdbc") as jdbc_topic,
            bench.downstream() as downstream,
        ):
            stage = _Stage(
                bench, name, worker, postgres, downstream, created(projected), merlin_projects,
                jdbc_topic, created(delivered), deliveries,
            )  # fmt: skip
            await produce(bench.kafka, merlin_projects.events_topic, stage.projected, encode)
            await produce(bench.kafka, jdbc_topic, stage.projected, with_schema)
            await produce(bench.kafka, deliveries.events_topic, stage.delivered, encode)
            await worker.ready((projection.JDBC_SINK, delivery.CAMEL_SINK))
            yield stage
    finally:
        await delete_groups(bench.kafka, lambda group: name in group)


@asynccontextmanager
async def _topic(kafka: KafkaSettings, topic: str) -> AsyncIterator[str]:
    """A topic shaped as merlin's events topic (partitions, replication), deleted at the end."""
    await ensure_topics(kafka, [TopicPlan(topic, kafka.partitions, kafka.replication_factor, {})])
    try:
        yield topic
    finally:
        await delete_topics(kafka, [topic])


# Counts of what went wrong are reported at their worst over the runs; the rest as medians.
_WORST = ("inversions", "duplicates", "refused")


async def _runs(runs: int, measure: Callable[[], Awaitable[dict[str, float]]]) -> dict[str, float]:
    results = [await measure() for _ in range(runs)]
    return {
        key: (max if key in _WORST else statistics.median)(result[key] for result in results)
        for key in results[0]
    }


def _extra(result: dict[str, dict[str, float]], *keys: str) -> dict[str, float]:
    return {f"{side}_{key}": result[side][key] for key in keys for side in ("merlin", "peer")}
