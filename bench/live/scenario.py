"""The ``live`` scenario: subscribers of live rooms on merlin's read API, beside Centrifugo.

For N subscribers over 100 rooms (1,000 and 10,000), each side is given the same messages at
the same open-loop rate (``sender``), held by the same subscribers' processes (``subscribers``):
merlin through its write API, its projection and its read API's streams; Centrifugo through its
HTTP publish API and its unidirectional SSE. Its Kafka consumer was the other way to feed it: it
takes records shaped for it (an API command, or a ``centrifugo-channels`` header in its
publication data mode), which the write API does not write, so a second producer would have fed
it, with a consumer's poll between the POST and the subscribers; its HTTP API is what an
application calls, as clients call merlin's write API.

The figure is deliveries per CPU-second of the server the subscribers hold streams on: merlin's
read API (its workers included) beside Centrifugo, N = the read API's ``--workers`` and
Centrifugo's ``GOMAXPROCS``; p50/p99 from the POST sent to each subscriber's receipt. The write
API's and the projection's CPU are in merlin's figures apart (``pipeline_per_core``): they run
with or without live rooms. Then what idle subscribers cost the rest: the write path's peak and
the projection's rate with 10,000 streams open on rooms that get nothing, beside none.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import secrets
import statistics
import sys
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.harness import PEERS, Bench, Row, projection_rate
from bench.live import centrifugo
from bench.live.accounting import (
    Side,
    comparison_row,
    expected_deliveries,
    idle_rows,
    split,
    subscriber_rooms,
)
from bench.live.usage import usage
from bench.peers.events import created, produce
from bench.wrk import post_messages_script, run_wrk
from domain import encode
from forwarder.settings import ForwarderSettings
from forwarder.worker import Forwarder
from kernel.auth import READ, mint
from kernel.settings import KafkaSettings
from read_store.engines import create_engine
from read_store.reader import ReadStore
from read_store.settings import ReadStoreSettings

PEER = f"{centrifugo.NAME} uni_sse"
# The read API holds a connection and a stream per subscriber: far past its default bounds per process
# (2,048 connections, 1,000 streams).
_CONNECTIONS = {"MERLIN_HTTP_MAX_CONNECTIONS": "30000", "MERLIN_READ_API_LIVE_MAX_STREAMS": "30000"}


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]  # subscribers
    workers: tuple[int, ...]  # N
    rooms: int
    offered: int  # deliveries/s asked of each side: the sender's rate is offered * rooms / subscribers
    seconds: float
    idle_subscribers: int
    idle_events: int
    idle_seconds: float  # of the write path's peak
    per_process: int  # subscribers per subscribers' process

    def rate(self, subscribers: int) -> float:
        return self.offered * self.rooms / subscribers


# 2,000 deliveries/s: at 5,000 (500 POST/s to 1,000 subscribers) merlin's write API, forwarder and read
# API together wanted more than this machine's two cores, its answers slowed, the open-loop POSTs piled
# up past the write API's 2,048 connections and were refused. Both sides take 2,000 with room to spare.
FULL = Plan((1_000, 10_000), (1, 2), 100, 2_000, 15, 10_000, 100_000, 10, 5_000)
QUICK = Plan((30,), (1,), 10, 150, 3, 30, 2_000, 2, 5_000)


def plan_of(bench: Bench) -> Plan:
    return QUICK if bench.quick else FULL


def _raise_open_files() -> None:
    """As many descriptors as this machine allows, for this process and the servers it starts."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# The load generators' processes.


class Subscribers:
    """The subscribers' processes: their progress as they print it, their reports once stopped."""

    def __init__(self, processes: list[asyncio.subprocess.Process], reports: list[Path]) -> None:
        self.processes = processes
        self.reports = reports
        self.progress: list[dict[str, Any]] = [{} for _ in processes]
        self.finals: list[dict[str, Any]] = [{} for _ in processes]
        self._readers = [asyncio.create_task(self._read(index)) for index in range(len(processes))]

    async def _read(self, index: int) -> None:
        stream = self.processes[index].stdout
        assert stream is not None
        while line := await stream.readline():
            parsed: dict[str, Any] = orjson.loads(line)
            if parsed.get("final"):
                self.finals[index] = parsed
            else:
                self.progress[index] = parsed

    def total(self, key: str) -> int:
        return sum(int(progress.get(key, 0)) for progress in self.progress)

    async def until(self, key: str, wanted: int, timeout: float, what: str, strict: bool = True) -> bool:
        """Wait until the processes' ``key`` adds up to ``wanted``; fail (or, not ``strict``, say so)."""
        deadline = time.monotonic() + timeout
        while self.total(key) < wanted:
            if self.total("failed") or any(process.returncode is not None for process in self.processes):
                raise RuntimeError(f"subscribers failed while waiting for {what}: {self.progress}")
            if time.monotonic() > deadline:
                if strict:
                    raise TimeoutError(f"{what}: {self.total(key):,} of {wanted:,} after {timeout:.0f} s")
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> list[dict[str, Any]]:
        for process in self.processes:
            if process.stdin is not None and process.returncode is None:
                process.stdin.write(b"stop\n")
                await process.stdin.drain()
        for process in self.processes:
            await asyncio.wait_for(process.wait(), 60)
        await asyncio.gather(*self._readers)
        return self.finals

    def latencies(self) -> list[float]:
        found: array[float] = array("d")
        for report in self.reports:
            with report.open("rb") as source:
                found.frombytes(source.read())
        return found.tolist()

    def kill(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()


@asynccontextmanager
async def subscribers(
    workdir: Path, kind: str, url: str, paths: Mapping[str, str], headers: Mapping[str, Mapping[str, str]],
    rooms: list[str], per_process: int,
) -> AsyncIterator[Subscribers]:  # fmt: skip
    """``rooms`` (one per subscriber) subscribed in processes of at most ``per_process`` streams each."""
    host, port = url.removeprefix("http://").split(":")
    processes, reports = [], []
    for part in split(rooms, per_process):
        name = f"subscribers-{uuid.uuid4().hex[:8]}"
        spec, report = workdir / f"{name}.json", workdir / f"{name}.latencies"
        described = {"kind": kind, "host": host, "port": int(port), "paths": paths, "headers": headers,
                     "rooms": part, "report": str(report)}  # fmt: skip
        spec.write_bytes(orjson.dumps(described))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.live.subscribers", str(spec),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
        )  # fmt: skip
        processes.append(process)
        reports.append(report)
    group = Subscribers(processes, reports)
    try:
        yield group
    finally:
        group.kill()
        for process in processes:
            await process.wait()


async def send(workdir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the sender (``bench.live.sender``) in its own process; its report."""
    path = workdir / f"sender-{uuid.uuid4().hex[:8]}.json"
    path.write_bytes(orjson.dumps(spec))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.live.sender", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the sender failed: {err.decode()[-2000:]}")
    report: dict[str, Any] = orjson.loads(out.decode().strip().splitlines()[-1])
    if report["refused"]:
        raise RuntimeError(f"messages refused: {report['refused']}")
    return report


# One side's measurement.


@dataclass(frozen=True)
class Target:
    """What the sender and the subscribers are pointed at, and whose CPU is counted."""

    kind: str
    server_pid: int  # the process (and its descendants) the subscribers hold streams on
    stream_url: str
    paths: dict[str, str]  # by room
    headers: dict[str, dict[str, str]]  # by room
    publish_url: str
    publish_headers: dict[str, str]
    pipeline_pids: tuple[int, ...] = ()  # merlin's write API and forwarder, counted apart


async def measure(workdir: Path, target: Target, plan: Plan, count: int) -> Side:
    """``count`` subscribers ready and primed, then the load; what they received and what it cost."""
    rooms = subscriber_rooms(count, plan.rooms)
    idle = usage(target.server_pid)
    publish = {"kind": target.kind, "url": target.publish_url, "headers": target.publish_headers,
               "rooms": sorted(set(rooms))}  # fmt: skip
    async with subscribers(
        workdir, target.kind, target.stream_url, target.paths, target.headers, rooms, plan.per_process
    ) as group:
        await group.until("ready", count, 60 + count / 100, "subscribers ready")
        await send(workdir, {**publish, "prime": True})
        await group.until("primed", count, 60, "priming messages received")
        before = [usage(pid) for pid in (target.server_pid, *target.pipeline_pids)]
        load = await send(workdir, {**publish, "rate": plan.rate(count), "seconds": plan.seconds})
        expected = expected_deliveries(load["accepted"], rooms)
        drain = max(10.0, plan.seconds)
        drained = await group.until("delivered", expected, drain, "deliveries", strict=False)
        after = [usage(pid) for pid in (target.server_pid, *target.pipeline_pids)]
        finals = await group.stop()
        latencies = group.latencies()
    spent = [end.cpu_s - start.cpu_s for start, end in zip(before, after, strict=True)]
    delivered = sum(final["delivered"] for final in finals)
    last = max((final["last_at"] for final in finals), default=0.0)
    extra = {
        "sender_cpu_s": load["cpu_s"], "subscribers_cpu_s": sum(final["cpu_s"] for final in finals),
        "post_p99_ms": load["post_p99_ms"], "sender_late_ms": load["late_s"] * 1000,
        "dropped": float(sum(final["dropped"] for final in finals)), "drained": float(drained),
    }  # fmt: skip
    if target.pipeline_pids:
        extra["pipeline_per_core"] = delivered / sum(spent) if sum(spent) > 0 else math.nan
    return Side(
        count, expected, delivered, sum(final["repeated"] for final in finals),
        max(last - load["first_sent"], 1e-9), spent[0], after[0].rss_mb, idle.rss_mb, latencies,
        plan.offered, extra,
    )  # fmt: skip


def _reader_token(bench: Bench, room: str) -> str:
    return mint(bench.auth_secret, f"reader-{room}", scopes=(READ,), rooms=(room,), ttl_seconds=86_400)


async def merlin_side(bench: Bench, plan: Plan, count: int, workers: int) -> dict[str, float]:
    """merlin's write API, a forwarder projecting into SQLite, the read API with ``workers`` processes."""
    _raise_open_files()
    async with bench.topics() as kafka, bench.sqlite_services("live", kafka) as services:
        write = await services.write_api()
        workers_env = {"MERLIN_READ_API_WORKERS": str(workers)} if workers > 1 else {}
        read = await services.read_api(**_CONNECTIONS, **workers_env)
        forwarder = services.forwarder()
        rooms = sorted(set(subscriber_rooms(count, plan.rooms)))
        target = Target(
            "merlin", read.process.pid, read.url or "", {room: f"/v1/rooms/{room}/live" for room in rooms},
            {room: {"Authorization": f"Bearer {_reader_token(bench, room)}"} for room in rooms},
            write.url or "", bench.headers(), (write.process.pid, forwarder.process.pid),
        )  # fmt: skip
        try:
            return (await measure(bench.workdir, target, plan, count)).figures()
        except RuntimeError as exc:
            # The access log's accepted requests say nothing about why others were refused.
            logs = "\n".join(f"{service.name}:\n{_unaccepted(service.output())}" for service in (write, read))
            raise RuntimeError(f"{exc}\n{logs}") from exc


def _unaccepted(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if '"status":202' not in line)[-6000:]


async def centrifugo_side(bench: Bench, plan: Plan, count: int, gomaxprocs: int) -> dict[str, float]:
    """Centrifugo with its memory engine, ``gomaxprocs`` threads running Go."""
    _raise_open_files()
    binary = await asyncio.to_thread(centrifugo.centrifugo_binary)
    token_secret, api_key = secrets.token_urlsafe(48), secrets.token_urlsafe(32)
    name = f"centrifugo-{uuid.uuid4().hex[:8]}"
    async with centrifugo.running(binary, bench.workdir, name, token_secret, api_key, gomaxprocs) as server:
        rooms = sorted(set(subscriber_rooms(count, plan.rooms)))
        paths = {
            room: centrifugo.stream_path(centrifugo.connection_token(token_secret, f"reader-{room}", [room]))
            for room in rooms
        }
        target = Target("centrifugo", server.pid, server.url, paths, {}, server.url, {"X-API-Key": api_key})
        return (await measure(bench.workdir, target, plan, count)).figures()


Measured = dict[tuple[int, int], dict[str, dict[str, float]]]


async def compare(bench: Bench, runs: int) -> Measured:
    """Both sides for every size and N, interleaved run by run; the median of each figure."""
    plan = plan_of(bench)
    results: dict[tuple[int, int], dict[str, list[dict[str, float]]]] = {}
    for _ in range(runs):
        for count in plan.sizes:
            for n in plan.workers:
                measured = results.setdefault((count, n), {"merlin": [], "peer": []})
                measured["peer"].append(await centrifugo_side(bench, plan, count, n))
                measured["merlin"].append(await merlin_side(bench, plan, count, n))
    return {
        key: {side: _medians(figures) for side, figures in sides.items()} for key, sides in results.items()
    }


def _medians(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(result[key] for result in results) for key in results[0]}


def comparison_rows(scenario: str, plan: Plan, measured: Measured) -> list[Row]:
    return [
        comparison_row(scenario, PEER, count, plan.rooms, n, sides["merlin"], sides["peer"])
        for (count, n), sides in measured.items()
    ]


# What idle subscribers cost the rest.


async def _projected(bench: Bench, kafka: KafkaSettings, url: str, count: int) -> float:
    """A forwarder (in this process, as the projection scenario's) projecting ``count`` events: events/s."""
    forwarder = Forwarder(
        ForwarderSettings(group_id=f"bench-{uuid.uuid4().hex[:8]}", metrics_port=0), kafka,
        ReadStoreSettings(url=url), endpoints=[],
    )  # fmt: skip
    reads = ReadStore(create_engine(url), kafka.events_topic)
    return await projection_rate(forwarder, reads, count)


async def _beside_idle(bench: Bench, plan: Plan, count: int) -> dict[str, float]:
    """The projection of a backlog, then the write path's peak, with ``count`` idle streams open."""
    _raise_open_files()
    async with bench.topics() as kafka, bench.sqlite_services("live-idle", kafka) as services:
        await produce(kafka, kafka.events_topic, created(plan.idle_events), encode)
        read = await services.read_api(**_CONNECTIONS)
        rooms = [f"idle-{n % plan.rooms}" for n in range(count)]
        paths = {room: f"/v1/rooms/{room}/live" for room in set(rooms)}
        headers = {room: {"Authorization": f"Bearer {_reader_token(bench, room)}"} for room in set(rooms)}
        async with contextlib.AsyncExitStack() as stack:
            if count:
                held = subscribers(
                    bench.workdir, "merlin", read.url or "", paths, headers, rooms, plan.per_process
                )
                group = await stack.enter_async_context(held)
                await group.until("ready", count, 60 + count / 100, "idle subscribers ready")
            projected = await _projected(bench, kafka, services.store_url, plan.idle_events)
            write = await services.write_api()
            script = post_messages_script(rooms=100, body_bytes=200, headers=bench.headers())
            peak = await asyncio.to_thread(run_wrk, write.url or "", script, 64, plan.idle_seconds)
    return {"events_per_second": projected, "requests_per_second": peak.requests_per_second,
            "p50_ms": peak.p50_ms, "p99_ms": peak.p99_ms}  # fmt: skip


async def idle_cost(bench: Bench, runs: int) -> tuple[dict[str, float], dict[str, float]]:
    """Without subscribers and with ``idle_subscribers``, interleaved run by run; the medians of each."""
    plan = plan_of(bench)
    alone: list[dict[str, float]] = []
    beside: list[dict[str, float]] = []
    for _ in range(runs):
        alone.append(await _beside_idle(bench, plan, 0))
        beside.append(await _beside_idle(bench, plan, plan.idle_subscribers))
    return _medians(alone), _medians(beside)


async def live(bench: Bench, runs: int) -> list[Row]:
    """The ``live`` scenario: merlin beside Centrifugo, then what idle subscribers cost the rest."""
    plan = plan_of(bench)
    rows = comparison_rows("live", plan, await compare(bench, runs))
    alone, beside = await idle_cost(bench, runs)
    return [*rows, *idle_rows("live", plan.idle_subscribers, plan.idle_events, alone, beside)]


async def live_peers(bench: Bench, runs: int) -> list[Row]:
    """The comparison's rows for ``python -m bench --peers``."""
    return comparison_rows(PEERS, plan_of(bench), await compare(bench, runs))
