"""Delivering the events to the test downstream: the Camel HTTP sink beside merlin's forwarders.

Both read merlin's own envelopes from the same topic. The figure is computed as the delivery
scenario's: (deliveries - 1) / (last arrival - first arrival). Each room's arrivals are checked
against the order the room's events were written in.

Not the same work: Camel POSTs the bare record, one at a time per task (its only concurrency is
tasks.max, at most one per partition), and fails the task at the first refusal unless told to
retry; merlin also projects each event into its read store and signs each delivery (Standard
Webhooks, with an Idempotency-Key), up to 100 in flight, each room in order, retrying with backoff.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from bench.harness import Bench
from bench.peers.forwarders import check_running, merlin_forwarders
from bench.peers.worker import ConnectWorker
from bench.pipeline import endpoints_file
from kernel.settings import KafkaSettings
from kernel.topics import delete_topics, ensure_topics

CAMEL_SINK = "org.apache.camel.kafkaconnector.CamelSinkConnector"
_POLL = 0.5  # every poll fetches every arrival so far: not too often, the downstream serves it
_TIMEOUT = 600.0


def http_sink(topic: str, url: str, tasks: int) -> dict[str, str]:
    """The connector's config: each record's value POSTed as it is to ``url``."""
    return {
        "connector.class": CAMEL_SINK,
        "tasks.max": str(tasks),
        "topics": topic,
        "camel.sink.url": url,
        "camel.sink.contentLogLevel": "OFF",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
    }


async def camel(
    worker: ConnectWorker, topic: str, downstream: str, count: int, places: dict[str, int], tasks: int
) -> dict[str, float]:
    """Connector POST → all ``count`` events at the downstream: deliveries/s and order kept."""
    suffix = uuid.uuid4().hex[:8]
    hook, name = f"camel-{suffix}", f"{worker.name}-camel-{suffix}-t{tasks}"
    started = time.time()
    await worker.create(name, http_sink(topic, f"{downstream}/hooks/{hook}", tasks))
    try:
        received = await arrivals(downstream, hook, count, lambda: worker.check(name))
    finally:
        await worker.delete(name)
    return figures(received, places, started)


async def warm_camel(worker: ConnectWorker, topic: str, downstream: str, deliveries: int) -> None:
    """Run the sink until ``deliveries`` arrived, then drop it: the worker's JIT and Camel warm."""
    suffix = uuid.uuid4().hex[:8]
    hook, name = f"warm-{suffix}", f"{worker.name}-warm-camel-{suffix}"
    await worker.create(name, http_sink(topic, f"{downstream}/hooks/{hook}", 1))
    try:
        await arrivals(downstream, hook, deliveries, lambda: worker.check(name))
    finally:
        await worker.delete(name)


async def merlin(
    bench: Bench,
    kafka: KafkaSettings,
    downstream: str,
    count: int,
    places: dict[str, int],
    processes: int,
    prefix: str,
) -> dict[str, float]:
    """``processes`` forwarders started → all ``count`` events at the downstream: deliveries/s, order kept.

    As the delivery scenario: a SQLite store of their own, one endpoint with max_in_flight 100.
    Their groups' ids start with ``prefix``.
    """
    suffix = uuid.uuid4().hex[:8]
    hook, group = f"merlin-{suffix}", f"{prefix}-forwarders-{suffix}"
    async with (
        _own_settings(kafka) as own,
        bench.sqlite_services("peers-delivery", own) as services,
    ):
        endpoints = endpoints_file(bench.workdir, downstream, 100, names=(hook,))
        started = time.time()
        workers = merlin_forwarders(
            services, processes, MERLIN_ENDPOINTS_FILE=str(endpoints), MERLIN_FORWARDER_GROUP_ID=group
        )

        async def check() -> None:
            check_running(workers)

        received = await arrivals(downstream, hook, count, check)
    return figures(received, places, started)


@asynccontextmanager
async def _own_settings(kafka: KafkaSettings) -> AsyncIterator[KafkaSettings]:
    """``kafka`` with settings and dead-letter topics of its own beside the shared events topic.

    An endpoints file adds its endpoints to the settings topic: a shared one would make each
    run deliver to the endpoints of the runs before it too.
    """
    prefix = f"peers-{uuid.uuid4().hex[:8]}"
    own = kafka.model_copy(
        update={"settings_topic": f"{prefix}.settings", "dead_letter_topic": f"{prefix}.dlq"}
    )
    await ensure_topics(own)
    try:
        yield own
    finally:
        await delete_topics(own, [own.settings_topic, own.dead_letter_topic])


async def arrivals(
    downstream: str, hook: str, count: int, check: Callable[[], Awaitable[None]]
) -> list[dict[str, Any]]:
    """Every request ``hook`` received, once ``count`` distinct messages were answered 200."""
    deadline = time.monotonic() + _TIMEOUT
    async with httpx.AsyncClient(timeout=60) as client:
        while True:
            await asyncio.sleep(_POLL)
            received: list[dict[str, Any]] = (await client.get(f"{downstream}/_received/{hook}")).json()
            if len({r["body"]["message_id"] for r in received if r["answer"] == 200}) >= count:
                return received
            await check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count:,} deliveries not at /hooks/{hook} within {_TIMEOUT:.0f} s")


def figures(received: list[dict[str, Any]], places: dict[str, int], started: float) -> dict[str, float]:
    """Deliveries/s (first to last arrival), when the first arrived, and how each room's order held.

    The downstream lists requests as they arrived; a message's later arrivals are duplicates.
    An inversion is a message arriving right after one written later in its room.
    """
    seen: set[str] = set()
    times: list[float] = []
    last_in_room: dict[str, int] = defaultdict(lambda: -1)
    inversions = 0
    for record in received:
        if record["answer"] != 200 or record["body"]["message_id"] in seen:
            continue
        message, room = record["body"]["message_id"], record["body"]["room_id"]
        seen.add(message)
        times.append(record["at"])
        inversions += places[message] < last_in_room[room]
        last_in_room[room] = places[message]
    answered = [r for r in received if r["answer"] == 200]
    return {
        "deliveries_per_second": (len(times) - 1) / (max(times) - min(times)),
        "first_s": min(times) - started,
        "inversions": float(inversions),
        "duplicates": float(len(answered) - len(seen)),
        "refused": float(len(received) - len(answered)),
    }
