"""Failover on a local three-node cluster: a partition leader SIGKILLed under write load, and a rolling
restart of three forwarders under the consumer group protocol and under the classic one (cooperative
and eager assignment), in the same run.

Clients retry every 503 with the same Idempotency-Key; a probe writes one message at a time and
reads it back with ``after_position``. Figures: write unavailability (the longest time without an
acknowledged write) and the longest wait from a write to its read.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bench.harness import Bench, Row
from bench.pipeline import control, endpoints_file, percentile, wait_received
from kernel.topics import delete_topics, ensure_topics
from merlin.local import LocalKafkaCluster
from merlin.local.load import Load, ReadProbe, joined
from merlin.local.service_processes import Services, eventually

# Kafka fences a dead broker after broker.session.timeout.ms (9 s): the window must outlast it.
_AFTER_KILL_SECONDS = 15.0


@asynccontextmanager
async def _cluster() -> AsyncIterator[LocalKafkaCluster]:
    cluster = LocalKafkaCluster(3, port=int(os.environ.get("BENCH_CLUSTER_PORT", "29092")))
    await asyncio.to_thread(cluster.reset)
    await asyncio.to_thread(cluster.start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.reset)


@asynccontextmanager
async def _services(bench: Bench, cluster: LocalKafkaCluster) -> AsyncIterator[Services]:
    """Services on topics of their own (3 partitions, 3 replicas, 2 in sync) and a SQLite store."""
    kafka = cluster.replicated(bench.kafka, f"failover-{uuid.uuid4().hex[:8]}")
    await ensure_topics(kafka)
    try:
        async with bench.sqlite_services("failover", kafka) as services:
            yield services
    finally:
        await delete_topics(kafka, kafka.topics)


async def _leader_kill(bench: Bench, cluster: LocalKafkaCluster) -> dict[str, float]:
    async with _services(bench, cluster) as services:
        write, read = await services.write_api(), await services.read_api()
        services.forwarder()
        load, probe = Load(write, clients=4), ReadProbe(write, read)
        stop = asyncio.Event()
        running = asyncio.gather(load.run(stop), probe.run(stop))
        await eventually(load.flowing(100), 30, "writes flowing")
        victim = await asyncio.to_thread(cluster.leader, services.kafka, 0)
        killed_at = time.monotonic()
        await asyncio.to_thread(victim.kill)
        # The load runs through the crash and the fencing; a quick run (the harness's smoke test)
        # only shows that the scenario runs.
        window = 3.0 if bench.quick else _AFTER_KILL_SECONDS
        await asyncio.sleep(window)
        stop.set()
        await running
        if not bench.quick:  # the rolls that follow run on all three; a quick run's make do with two
            await asyncio.to_thread(victim.start)
        after = [s for s, at in zip(probe.stalls, probe.finished, strict=True) if at > killed_at]
        return {
            "unavailable_s": load.longest_gap(killed_at, killed_at + window),
            "longest_stall_s": max(after, default=0.0),
            "answered_503": float(sum(w.statuses.count(503) for w in load.writes)),
            "unexpected": float(len(load.unexpected)),
        }


# How the forwarders' groups rebalance: the consumer group protocol (the default), and the classic
# protocol with cooperative and with eager assignment.
_PROTOCOLS = {
    "consumer": {"MERLIN_FORWARDER_GROUP_PROTOCOL": "consumer"},
    "cooperative": {"MERLIN_FORWARDER_GROUP_PROTOCOL": "classic",
                    "MERLIN_FORWARDER_ASSIGNMENT_STRATEGY": "cooperative-sticky"},
    "eager": {"MERLIN_FORWARDER_GROUP_PROTOCOL": "classic", "MERLIN_FORWARDER_ASSIGNMENT_STRATEGY": "range"},
}  # fmt: skip


async def _rolling_restart(bench: Bench, cluster: LocalKafkaCluster, env: dict[str, str]) -> dict[str, float]:
    async with _services(bench, cluster) as services, bench.downstream() as downstream:
        write, read = await services.write_api(), await services.read_api()
        # An endpoint answering in 20 ms, so deliveries are in flight whenever partitions move:
        # what a rebalance takes from a member mid-call is sent again by the next owner.
        await control(downstream, mode="slow", delay=0.02)
        env = {**env, "MERLIN_ENDPOINTS_FILE": str(endpoints_file(bench.workdir, downstream, 100))}
        workers = [services.forwarder(**env) for _ in range(3)]
        # A probe per room over several rooms, so every partition is watched, moved or not.
        load = Load(write, clients=4)
        probes = [ReadProbe(write, read, room=f"probe-{n}") for n in range(6)]
        stop = asyncio.Event()
        running = asyncio.gather(load.run(stop), *(probe.run(stop) for probe in probes))
        await eventually(load.flowing(100), 30, "writes flowing")
        for worker in workers:
            await eventually(joined(worker), 30, "every worker owning partitions")
        # A quick run (the harness's smoke test) only shows the roll runs: one worker, short settles.
        settle = 0.5 if bench.quick else 2.0
        await asyncio.sleep(settle)  # the first assignments settle
        started = time.monotonic()
        for n in range(1 if bench.quick else len(workers)):
            await asyncio.to_thread(workers[n].stop)  # off the loop: the probes go on timing meanwhile
            workers[n] = services.forwarder(**env)
            await eventually(joined(workers[n]), 30, "the new worker owning partitions")
        await asyncio.sleep(settle)  # the last rebalance settles under load
        stop.set()
        await running
        acked = {w.message_id for w in load.writes if w.message_id is not None}
        calls = await wait_received(downstream, acked, 120)
        sent = Counter(call["webhook_id"] for call in calls)
        during = [
            stall
            for probe in probes
            for stall, at in zip(probe.stalls, probe.finished, strict=True)
            if at - stall > started
        ]
        return {
            "longest_stall_s": max(during, default=0.0),
            "p50_stall_s": percentile(during or [0.0], 0.5),
            "p99_stall_s": percentile(during or [0.0], 0.99),
            "over_half_second": float(sum(1 for stall in during if stall > 0.5)),
            "sent_again": float(sum(count - 1 for count in sent.values())),
            "errors": float(len(load.unexpected)),
        }


async def failover(bench: Bench, runs: int) -> list[Row]:
    """A leader SIGKILLed under load; rolling restarts of three forwarders under each group protocol."""
    async with _cluster() as cluster:
        kill = await _leader_kill(bench, cluster)
        # A quick run (the harness's smoke test) rolls under the default protocol alone.
        protocols = {"consumer": _PROTOCOLS["consumer"]} if bench.quick else _PROTOCOLS
        rolls = {name: await _rolling_restart(bench, cluster, env) for name, env in protocols.items()}
    rows = [
        Row("failover", "leader SIGKILLed under load: longest time without an acknowledged write", "s",
            kill["unavailable_s"], None, None, None, None,
            {"longest_write_to_readable_s": kill["longest_stall_s"], "answered_503": kill["answered_503"],
             "errors": kill["unexpected"]}),
    ]  # fmt: skip
    eager = rolls.get("eager")
    for name, roll in rolls.items():
        beside = eager is not None and name != "eager"
        rows.append(
            Row("failover", f"rolling restart of 3 forwarders ({name}): longest write → readable", "s",
                roll["longest_stall_s"], eager["longest_stall_s"] if beside and eager else None,
                "eager (classic, range), same run" if beside else None,
                roll["p50_stall_s"] * 1000, roll["p99_stall_s"] * 1000,
                {"reads_over_half_a_second": roll["over_half_second"],
                 "events_sent_again": roll["sent_again"], "errors": roll["errors"]})
        )  # fmt: skip
    return rows
