"""The soak: steady open-loop load for half an hour, every service's resident memory sampled throughout.

A leak shows as memory that keeps growing with the events; a cache shows as memory
that grows up to its bound and stays there. Before the measured part, a warm-up fills
what is bounded but large, so that what follows measures what grows per event: the
load at the soak's rate on the APIs, and beside it events written straight into the log
(150,000 at 300/s by default). The largest such bound is the SQLite read store's page
cache of the forwarder's projection writer (64 MiB, ``read_store/dialect.py``): it takes
every page the projection writes, about 0.5-0.75 KB per event, until it is full, some
100,000 events into a new store. The warm-up is steady and well inside what the forwarder
keeps up with (its lag is reported): a backlog would raise the heap's high-water mark and
leave room a leak could grow into without raising RSS.

Each process's RSS (``/proc/<pid>/status``) is read every few seconds; the events are
the write API's ``202`` answers up to each sample. Reported per process: RSS when it
started, after the warm-up, at half-time and at the end; the least-squares slope over
the measured part (KB per 1,000 events and MB per hour) and over its second half.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import structlog
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import Bench, Memory, Row
from bench.pipeline import BODY, endpoints_file, percentile
from bench.vegeta import Attack, attack
from domain import MessageCreated, encode
from domain import headers as event_headers
from kernel.producer import AsyncProducer
from kernel.settings import KafkaSettings
from merlin.local.service_processes import Service, eventually, free_port

log = structlog.get_logger()

_SERVICES = ("write-api", "read-api", "admin-api", "forwarder")


@dataclass(frozen=True)
class Plan:
    """How long and how hard: the measured part, and the warm-up before it."""

    seconds: float
    rate: int = 100  # msg/s, open loop
    rooms: int = 50
    warm_up_events: int = 150_000
    warm_up_rate: int = 300
    every: float = 15.0  # seconds between samples
    probe_every: float = 1.0  # a message written and read back (after_position) this often

    @classmethod
    def of(cls, bench: Bench) -> Plan:
        seconds, warm_up = bench.soak_seconds, bench.soak_warm_up
        if bench.quick:
            quick = cls(seconds or 10.0, warm_up_events=500, warm_up_rate=250, every=0.5, probe_every=0.5)
            return quick if warm_up is None else replace(quick, warm_up_events=warm_up)
        plan = cls(seconds or 30 * 60.0)
        return plan if warm_up is None else replace(plan, warm_up_events=warm_up)


@dataclass(frozen=True)
class Sample:
    at: float  # Unix time
    rss_kb: dict[str, int]
    lag: float = 0.0  # records behind the log's end, summed over the forwarder's groups and partitions


async def _until(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))


def rss_kb(pid: int) -> int:
    """The resident set of process ``pid``, in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _sample(
    services: dict[str, Service], metrics_port: int, every: float, into: list[Sample], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        for name, service in services.items():
            if service.process.poll() is not None:
                raise RuntimeError(f"{name} exited during the soak:\n{service.output()[-3000:]}")
        at, used = time.time(), {name: rss_kb(s.process.pid) for name, s in services.items()}
        into.append(Sample(at, used, (await _forwarder_metrics(metrics_port))["lag"]))
        if len(into) % max(1, round(300 / every)) == 0:  # a line every five minutes or so
            log.info(
                "soak_progress", **{f"{n}_rss_mb": round(kb / 1024, 1) for n, kb in into[-1].rss_kb.items()}
            )
        await _until(stop, every)


@dataclass
class Probe:
    """A message written and read back (``after_position``) every ``every`` s: the read API's share."""

    every: float
    written: list[float] = field(default_factory=list)  # when each write was accepted (Unix time)
    readable: list[float] = field(default_factory=list)  # write sent -> read back, s
    failed: list[int] = field(default_factory=list)  # statuses other than 202 and 200


async def _probe(write: str, read: str, probe: Probe, stop: asyncio.Event, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.perf_counter()
            room = f"probe-{n % 5}"
            posted = await client.post(
                f"{write}/v1/rooms/{room}/messages",
                content=BODY,
                headers={"Content-Type": "application/json"},
            )
            if posted.status_code != 202:
                probe.failed.append(posted.status_code)
            else:
                probe.written.append(time.time())
                answer = posted.json()
                got = await client.get(
                    f"{read}/v1/rooms/{room}/messages/{answer['message_id']}",
                    params={"after_position": answer["position"]},
                )
                if got.status_code == 200:
                    probe.readable.append(time.perf_counter() - started)
                else:
                    probe.failed.append(got.status_code)
            await _until(stop, probe.every - (time.perf_counter() - started))


async def _forwarder_metrics(metrics_port: int) -> dict[str, float]:
    """From the forwarder's ``/metrics``: the events it delivered, and its lag (every group and partition)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    found = {"delivered": 0.0, "lag": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "merlin_deliveries_total" and sample.labels.get("outcome") == "delivered":
                found["delivered"] += sample.value
            elif sample.name == "merlin_forwarder_lag_records":
                found["lag"] += sample.value
    return found


async def _delivered(metrics_port: int) -> float:
    return (await _forwarder_metrics(metrics_port))["delivered"]


async def _produce_steadily(kafka: KafkaSettings, count: int, rate: int, rooms: int) -> int:
    """``count`` events straight into the events topic at ``rate`` a second, over ``rooms`` rooms, as the
    write API writes them; how many the broker took."""
    producer = AsyncProducer(kafka.client({"acks": "all", "enable.idempotence": True}))
    tick = 0.05  # a twentieth of a second's events at a time: steady, not a burst
    loop = asyncio.get_running_loop()
    due = loop.time()
    written = 0
    try:
        while written < count:
            now = datetime.now(UTC)
            events = [
                MessageCreated(
                    uuid.uuid4(), f"room-{(written + n) % rooms}", uuid.uuid4(), "bench", "x" * 200, now
                )
                for n in range(min(count - written, max(1, round(rate * tick))))
            ]
            await asyncio.gather(
                *(
                    producer.send(kafka.events_topic, encode(e), e.room_id.encode(), event_headers(e))
                    for e in events
                )
            )
            written += len(events)
            due += tick
            await asyncio.sleep(max(0.0, due - loop.time()))
    finally:
        await producer.close()
    return written


def _accepted_times(attacks: list[Attack], probe: Probe) -> list[float]:
    """When each accepted write was answered (Unix time), in order."""
    answered = [s.sent_at + s.latency_s for a in attacks for s in a.results if s.status == 202]
    return sorted([*answered, *probe.written])


def slope(xs: list[float], ys: list[float]) -> float:
    """The least-squares slope of ``ys`` over ``xs`` (0 when the xs do not vary)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def memory(
    name: str, fresh: Sample, samples: list[Sample], started: float, answered: list[float], base: int
) -> Memory:
    """``name``'s memory over the measured part (the samples from ``started``); ``answered`` holds when
    each write was accepted, the first ``base`` of them before that part."""
    measured = [s for s in samples if s.at >= started]
    events = [float(bisect.bisect_right(answered, s.at) - base) for s in measured]
    minutes = [(s.at - started) / 60 for s in measured]
    kb = [float(s.rss_kb[name]) for s in measured]
    middle = measured[len(measured) // 2]
    second = len(measured) // 2
    return Memory(
        process=name,
        fresh_mb=fresh.rss_kb[name] / 1024,
        start_mb=kb[0] / 1024,
        half_mb=middle.rss_kb[name] / 1024,
        end_mb=kb[-1] / 1024,
        kb_per_1000_events=1000 * slope(events, kb),
        mb_per_hour=60 * slope(minutes, kb) / 1024,
        second_half_kb_per_1000_events=1000 * slope(events[second:], kb[second:]),
        events=events[-1],
        samples=[
            ((s.at - started) / 60, float(bisect.bisect_right(answered, s.at) - base), s.rss_kb[name] / 1024)
            for s in samples
        ],
    )


async def soak(bench: Bench, runs: int) -> list[Row]:
    """Steady open-loop POSTs over a few rooms, one healthy endpoint, a probe reading its own writes:
    each service's RSS at start, half-time and end, and its growth per event. One run, whatever ``runs``."""
    plan = Plan.of(bench)
    paths = [f"/v1/rooms/room-{n}/messages" for n in range(plan.rooms)]
    probe = Probe(plan.probe_every)
    samples: list[Sample] = []
    async with (
        bench.topics() as kafka,
        bench.downstream() as downstream,
        bench.sqlite_services("soak", kafka) as services,
    ):
        write, read, admin = await services.write_api(), await services.read_api(), await services.admin_api()
        port = free_port()
        forwarder = services.forwarder(
            MERLIN_FORWARDER_METRICS_PORT=str(port),
            # One endpoint as an operator would define it: the definition's defaults.
            MERLIN_ENDPOINTS_FILE=str(endpoints_file(bench.workdir, downstream, 32, buffer=20_000)),
        )
        processes = dict(zip(_SERVICES, (write, read, admin, forwarder), strict=True))

        async def serving() -> bool | None:
            try:
                return await _delivered(port) >= 0 or None
            except httpx.TransportError:
                return None

        await eventually(serving, 30, "the forwarder's metrics")
        fresh = Sample(time.time(), {name: rss_kb(s.process.pid) for name, s in processes.items()})
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(processes, port, plan.every, samples, stop))
        url, caller = write.url or "", bench.headers()
        produced = 0
        try:
            warm = Attack([], 0.0)
            if plan.warm_up_events:  # (vegeta takes a duration of 0 as "for ever")
                seconds = plan.warm_up_events / plan.warm_up_rate
                produced, warm = await asyncio.gather(
                    _produce_steadily(kafka, plan.warm_up_events, plan.warm_up_rate, plan.rooms),
                    asyncio.to_thread(attack, url, paths, BODY, plan.rate, seconds, caller),
                )
            started = time.time()
            probing = asyncio.create_task(_probe(url, read.url or "", probe, stop, caller))
            load = await asyncio.to_thread(attack, url, paths, BODY, plan.rate, plan.seconds, caller)
        finally:
            stop.set()
            await sampler
        await probing
        answered = _accepted_times([warm, load], probe)
        accepted = len(answered) + produced

        async def all_delivered() -> float | None:
            delivered = await _delivered(port)
            return delivered if delivered >= accepted else None

        try:
            delivered = await eventually(all_delivered, 120, f"{accepted:,} deliveries")
        except AssertionError:
            delivered = await _delivered(port)
    base = bisect.bisect_right(answered, started)  # (the events produced straight into the log are not in it)
    memories = {name: memory(name, fresh, samples, started, answered, base) for name in _SERVICES}
    posted = [s.latency_s for s in load.results]
    errors = (
        sum(1 for s in load.results if s.status != 202) + len(probe.failed) + max(0.0, accepted - delivered)
    )
    lasted = f"{plan.seconds / 60:g} min" if plan.seconds >= 60 else f"{plan.seconds:g} s"
    achieved = sum(1 for s in load.results if s.status == 202) / plan.seconds
    rows = [
        Row("soak", f"{plan.rate:,} msg/s over {plan.rooms} rooms for {lasted}, one endpoint: POST",
            "msg/s", achieved, plan.rate, "offered rate",
            percentile(posted, 0.5) * 1000, percentile(posted, 0.99) * 1000,
            {"errors": float(errors), "delivered": delivered, "accepted": float(accepted),
             "warm_up_events": float(plan.warm_up_events), "warm_up_rate": float(plan.warm_up_rate),
             "max_lag_warm_up": max((x.lag for x in samples if x.at < started), default=0.0),
             "max_lag": max((x.lag for x in samples if x.at >= started), default=0.0),
             "vegeta_cpu_s": warm.generator_cpu_seconds + load.generator_cpu_seconds}),
        Row("soak", f"written -> read back (after_position), every {plan.probe_every:g} s", "ms (p99)",
            percentile(probe.readable, 0.99) * 1000, None, None, percentile(probe.readable, 0.5) * 1000,
            percentile(probe.readable, 0.99) * 1000),
    ]  # fmt: skip
    for name, used in memories.items():
        rows.append(
            Row("soak", f"{name}: RSS at the end, beside after the warm-up", "MB", used.end_mb, used.start_mb,
                "RSS after the warm-up", extra={"kb_per_1000_events": used.kb_per_1000_events,
                                                "mb_per_hour": used.mb_per_hour}, memory=used)
        )  # fmt: skip
    return rows
