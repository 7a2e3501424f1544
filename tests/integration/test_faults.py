"""Faults, for real: a three-node KRaft cluster from merlin's own jars (replication 3, min ISR 2),
real services, and a PostgreSQL server of the test's own that it stops.

Each scenario writes under load with clients that retry a 503 with the same Idempotency-Key, as
the README tells them to, and then checks what a user would: every acknowledged message is
readable, none twice, no 202 while a write could not be durable, never a 500. Each prints its
figures (write unavailability, the longest wait from a write to its read).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernel.position import Position
from kernel.settings import KafkaSettings
from kernel.topics import delete_topics, ensure_topics
from merlin.local import LocalPostgres
from merlin.local.kafka import LocalKafkaCluster
from merlin.local.load import Load, ReadProbe, joined, revoked
from merlin.local.service_processes import Service, Services, eventually
from read_store.migrate import upgrade
from tests.conftest import PostgresSchema, create_schema

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalKafkaCluster]:
    """Three KRaft nodes, each broker and voter, started from an empty state and removed after."""
    cluster = LocalKafkaCluster(3, port=int(os.environ.get("TEST_CLUSTER_PORT", "19092")))
    cluster.reset()
    cluster.start()
    yield cluster
    cluster.reset()


@pytest.fixture
async def replicated(cluster: LocalKafkaCluster) -> AsyncIterator[KafkaSettings]:
    """This test's topics on the cluster: 3 partitions, 3 replicas, 2 in sync for a write."""
    for node in cluster.nodes:  # a previous scenario may have left one down
        await asyncio.to_thread(node.start)
    settings = cluster.replicated(KafkaSettings(), f"fault-{uuid.uuid4().hex[:8]}")
    await ensure_topics(settings)
    yield settings
    await delete_topics(settings, settings.topics)


async def every_ack_readable_once(read: Service, load: Load) -> int:
    """Each acknowledged write is readable, each key made exactly one message; the messages read."""
    acked = [w for w in load.writes if w.acked_at is not None]
    last: dict[str, Position] = {}
    for write in acked:
        assert write.position is not None
        position = Position.parse(write.position)
        last[write.room] = max(position, last.get(write.room, position))
    total = 0
    async with httpx.AsyncClient(base_url=read.url or "", headers=read.headers, timeout=60) as http:
        for room, position in last.items():
            items: list[dict[str, Any]] = []
            url: str | None = f"/v1/rooms/{room}/messages?limit=500&after_position={position}"
            while url is not None:
                answer = await http.get(url)
                assert answer.status_code == 200, answer.text
                items.extend(answer.json()["items"])
                url = answer.json()["next"]
            bodies = [item["body"] for item in items]
            assert len(bodies) == len(set(bodies)), f"{room}: a message recorded twice"
            wanted = {w.key for w in acked if w.room == room}
            assert wanted <= set(bodies), f"{room}: {len(wanted - set(bodies))} acknowledged not readable"
            by_key = {item["body"]: item["message_id"] for item in items}
            assert all(by_key[w.key] == w.message_id for w in acked if w.room == room)
            total += len(items)
    return total


def report(scenario: str, **figures: float | int) -> None:
    """Print a scenario's figures (``pytest -s`` shows them; ``make faults`` runs with it)."""
    shown = ", ".join(
        f"{name} {value:.2f}" if isinstance(value, float) else f"{name} {value}"
        for name, value in figures.items()
    )
    print(f"\nfault {scenario}: {shown}")


@pytest.fixture
async def services(
    replicated: KafkaSettings, tmp_path: Path, postgres_schema: PostgresSchema
) -> AsyncIterator[Services]:
    """Services on the cluster's topics, with a migrated PostgreSQL store of the test's own."""
    await upgrade(postgres_schema.url, postgres_schema.schema)
    services = Services(replicated, postgres_schema.url, tmp_path, postgres_schema.schema)
    yield services
    services.stop_all()


async def test_a_leader_killed_under_write_load_loses_nothing_and_doubles_nothing(
    cluster: LocalKafkaCluster, replicated: KafkaSettings, services: Services
) -> None:
    write, read = await services.write_api(), await services.read_api()
    services.forwarder()
    load, probe = Load(write), ReadProbe(write, read)
    stop = asyncio.Event()
    running = asyncio.gather(load.run(stop), probe.run(stop))
    await eventually(load.flowing(200), 30, "writes flowing")
    victim = await asyncio.to_thread(cluster.leader, replicated, 0)
    killed_at = time.monotonic()
    assert await asyncio.to_thread(victim.kill)
    await asyncio.sleep(15)  # the load goes on through the crash and past the fencing (9 s)
    stop.set()
    await running
    assert load.unexpected == []
    messages = await every_ack_readable_once(read, load)
    report(
        "leader-kill",
        acknowledged=sum(1 for w in load.writes if w.acked_at is not None),
        first_answers_503=sum(1 for w in load.writes if w.statuses and w.statuses[0] == 503),
        write_unavailability_s=load.longest_gap(killed_at, killed_at + 15),
        longest_stall_to_readable_s=max(probe.stalls),
        messages=messages,
    )


async def test_with_two_brokers_of_three_down_no_write_is_acknowledged_and_none_is_lost(
    cluster: LocalKafkaCluster, replicated: KafkaSettings, services: Services
) -> None:
    write, read = await services.write_api(), await services.read_api()
    services.forwarder()
    load = Load(write, clients=4)
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop, retry_until=120))
    await eventually(load.flowing(100), 30, "writes flowing")
    victims = cluster.nodes[1:]
    for victim in victims:
        assert await asyncio.to_thread(victim.kill)
    down_at = time.monotonic()
    async with httpx.AsyncClient(base_url=write.url or "", timeout=30) as http:
        await eventually(lambda: _not_ready(http), 30, "the write API not ready")
        not_ready_after = time.monotonic() - down_at
        await asyncio.sleep(10)  # an outage long enough for clients to keep retrying
        assert (await http.get("/readyz")).status_code == 503
    up_at = time.monotonic()
    for victim in victims:
        await asyncio.to_thread(victim.start)
    await eventually(lambda: _acked_after(load, up_at), 60, "writes acknowledged again")
    stop.set()
    await running
    assert load.unexpected == []
    # In-flight writes replicated before the crash may be acknowledged just after it; nothing later.
    during = [a for a in load.acks if down_at + 0.5 < a < up_at]
    assert during == [], f"{len(during)} writes acknowledged while two brokers of three were down"
    messages = await every_ack_readable_once(read, load)
    report(
        "two-of-three-down",
        not_ready_after_s=not_ready_after,
        acknowledged=sum(1 for w in load.writes if w.acked_at is not None),
        answered_503=sum(w.statuses.count(503) for w in load.writes),
        write_unavailability_s=load.longest_gap(down_at, time.monotonic()),
        messages=messages,
    )


async def _not_ready(http: httpx.AsyncClient) -> bool | None:
    return (await http.get("/readyz")).status_code == 503 or None


async def _acked_after(load: Load, moment: float) -> bool | None:
    return any(a > moment for a in load.acks) or None


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this module's own, so stopping it touches no other test."""
    server = LocalPostgres(port=int(os.environ.get("TEST_OUTAGE_POSTGRES_PORT", "25442")))
    server.start()
    yield server
    server.stop()


async def test_a_store_stopped_for_20_s_answers_503_and_the_projection_heals_within_a_second(
    replicated: KafkaSettings, own_postgres: LocalPostgres, tmp_path: Path
) -> None:
    url = (await asyncio.to_thread(own_postgres.status)).url("merlin", driver="postgresql")
    schema = f"outage_{uuid.uuid4().hex[:8]}"
    await create_schema(url, schema)
    await upgrade(url, schema)
    services = Services(replicated, url, tmp_path, schema)
    try:
        write, read = await services.write_api(), await services.read_api()
        forwarder = services.forwarder(MERLIN_FORWARDER_METRICS_PORT="0")
        load, probe = Load(write, clients=4), ReadProbe(write, read)
        stop = asyncio.Event()
        running = asyncio.gather(load.run(stop), probe.run(stop))
        await eventually(load.flowing(100), 30, "writes flowing")
        await asyncio.to_thread(own_postgres.stop)
        stopped_at = time.monotonic()
        statuses: list[int] = []
        async with httpx.AsyncClient(base_url=read.url or "", headers=read.headers, timeout=30) as http:
            while time.monotonic() - stopped_at < 20:
                answer = await http.get(f"/v1/rooms/{load.rooms[0]}/messages")
                statuses.append(answer.status_code)
                if answer.status_code == 503:
                    assert answer.headers["retry-after"]
                await asyncio.sleep(0.2)
        await asyncio.to_thread(own_postgres.start)
        back_at = time.monotonic()
        healed = await eventually(lambda: _readable_since(probe, back_at), 60, "the projection moving again")
        stop.set()
        await running
        assert 500 not in statuses
        assert statuses.count(503) > len(statuses) // 2, statuses
        assert load.unexpected == []
        messages = await every_ack_readable_once(read, load)
        # The outage was the store's, not any record's: nothing refused, nothing dead-lettered.
        assert "record_refused" not in forwarder.output()
        assert "poison_record" not in forwarder.output()
        report(
            "store-outage",
            read_503s=statuses.count(503),
            read_500s=statuses.count(500),
            healed_after_store_back_s=healed,
            longest_stall_to_readable_s=max(probe.stalls),
            messages=messages,
        )
        assert healed < 5.0
    finally:
        services.stop_all()


async def _readable_since(probe: ReadProbe, moment: float) -> float | None:
    """Seconds from ``moment`` to the end of the first probe that finished after it."""
    return None if not probe.finished or probe.finished[-1] < moment else probe.finished[-1] - moment


async def test_a_rolling_restart_of_three_forwarders_moves_only_what_changes_owner(
    replicated: KafkaSettings, services: Services
) -> None:
    write, read = await services.write_api(), await services.read_api()
    workers = [services.forwarder() for _ in range(3)]
    load, probe = Load(write, clients=4), ReadProbe(write, read)
    stop = asyncio.Event()
    running = asyncio.gather(load.run(stop), probe.run(stop))
    await eventually(load.flowing(100), 30, "writes flowing")
    for n, worker in enumerate(workers):
        await eventually(joined(worker), 30, f"worker {n} in the group")
    started, began = time.monotonic(), time.time()
    stopping: dict[int, float] = {}  # each stopped worker (by id): when it was told to stop
    for n in range(3):
        stopping[id(workers[n])] = time.time()
        assert await asyncio.to_thread(workers[n].stop) == 0  # off the loop: the probe goes on timing
        workers[n] = services.forwarder()
        await eventually(joined(workers[n]), 30, f"replacement {n} took partitions")
    stop.set()
    await running
    assert load.unexpected == []
    # A leaving worker's partitions go to the others with nothing taken from them; a joining one
    # takes one partition from one of them. So the workers that stayed let go of three in all
    # (an eager rebalance takes every partition from every member each time).
    forwarders = [w for w in services.running if w.name == "forwarder"]
    moved = sum(revoked(w, began, stopping.get(id(w))) for w in forwarders)
    assert moved <= 3, f"the workers that stayed let go of {moved} partitions"
    messages = await every_ack_readable_once(read, load)
    during = [s for s, at in zip(probe.stalls, probe.finished, strict=True) if at > started]
    report(
        "rolling-restart",
        longest_stall_to_readable_s=max(during),
        p99_stall_to_readable_s=sorted(during)[int(len(during) * 0.99) - 1] if during else 0.0,
        messages=messages,
    )
