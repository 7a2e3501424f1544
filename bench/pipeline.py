"""Scenarios of the whole pipeline: end to end under open-loop load, delivery, fairness, recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import Bench, Row, median_of
from bench.vegeta import Attack, attack
from bench.wrk import run_wrk
from domain import MessageCreated, encode, headers
from kernel.producer import AsyncProducer
from kernel.settings import KafkaSettings
from merlin.local.service_processes import eventually, free_port
from read_store.engines import create_engine
from read_store.migrate import upgrade
from read_store.reader import ReadStore

BODY = orjson.dumps({"sender_id": "bench", "body": "x" * 200})
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def _ms(values: list[float]) -> tuple[float, float]:
    return percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000


def endpoints_file(
    workdir: Path,
    downstream: str,
    max_in_flight: int,
    buffer: int = 20_000,
    names: tuple[str, ...] = ("bench",),
) -> Path:
    path = workdir / f"endpoints-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(
        "".join(
            f'[[endpoints]]\nname = "{name}"\nurl = "{downstream}/hooks/{name}"\n'
            f'secret = "{SECRET}"\nmax_in_flight = {max_in_flight}\nbuffer = {buffer}\n'
            # The scenarios fill the log before the forwarder starts: the endpoint takes all of it.
            'since = "2000-01-01T00:00:00Z"\n'
            for name in names
        )
    )
    return path


async def control(downstream: str, endpoint: str = "bench", **spec: Any) -> None:
    """Tell the test downstream how to answer ``endpoint`` (``tests.downstream``: fail, slow, hang, ...)."""
    async with httpx.AsyncClient(timeout=10) as client:
        (await client.post(f"{downstream}/_control/{endpoint}", json=spec)).raise_for_status()


async def deliveries(downstream: str, endpoint: str = "bench") -> list[dict[str, Any]]:
    """Every request the test downstream's ``endpoint`` received."""
    async with httpx.AsyncClient(timeout=60) as client:
        answer: list[dict[str, Any]] = (await client.get(f"{downstream}/_received/{endpoint}")).json()
        return answer


async def wait_received(downstream: str, wanted: int | set[str], timeout: float) -> list[dict[str, Any]]:
    """What the downstream received, once it has ``wanted`` messages (a count, or these message ids)."""

    async def enough() -> list[dict[str, Any]] | None:
        received = await deliveries(downstream)
        ids = {r["body"]["message_id"] for r in received}
        return received if (len(ids) >= wanted if isinstance(wanted, int) else wanted <= ids) else None

    return await eventually(
        enough, timeout, f"{wanted if isinstance(wanted, int) else len(wanted)} deliveries"
    )


async def _produce(kafka: KafkaSettings, events: list[MessageCreated]) -> None:
    producer = AsyncProducer(kafka.client({"acks": "all", "enable.idempotence": True, "linger.ms": 2}))
    try:
        await asyncio.gather(
            *(producer.send(kafka.events_topic, encode(e), e.room_id.encode(), headers(e)) for e in events)
        )
    finally:
        await producer.close()


def _created(room: str) -> MessageCreated:
    return MessageCreated(uuid.uuid4(), room, uuid.uuid4(), "bench", "x" * 200, datetime.now(UTC))


# -- end to end ------------------------------------------------------------------------------------


async def _probe_readable(
    write: str,
    read: str,
    stop: asyncio.Event,
    latencies: list[float],
    unread: list[int],
    headers: dict[str, str],
) -> None:
    """Every 50 ms: POST a message, then read it back with after_position; POST sent → 200 read.

    A read that is not a 200 (the projection still behind after the wait) is counted in ``unread``.
    """
    async with (
        httpx.AsyncClient(timeout=30, headers=headers) as writer,
        httpx.AsyncClient(timeout=30, headers=headers) as reader,
    ):
        n = 0
        while not stop.is_set():
            n += 1
            room = f"probe-{n % 10}"
            started = time.perf_counter()
            posted = (await writer.post(f"{write}/v1/rooms/{room}/messages", content=BODY,
                                        headers={"Content-Type": "application/json"})).json()  # fmt: skip
            got = await reader.get(
                f"{read}/v1/rooms/{room}/messages/{posted['message_id']}",
                params={"after_position": posted["position"]},
            )
            if got.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                unread.append(got.status_code)
            await asyncio.sleep(max(0.0, 0.05 - (time.perf_counter() - started)))


async def _load_with_probe(
    write: str, read: str, rate: int, seconds: float, headers: dict[str, str]
) -> tuple[Attack, list[float], list[int]]:
    """Open-loop POSTs over 100 rooms at ``rate`` for ``seconds``, while a probe reads its own writes.

    Returns the load, the probe's POST sent -> readable latencies, and the statuses of reads that failed.
    """
    readable: list[float] = []
    unread: list[int] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe_readable(write, read, stop, readable, unread, headers))
    paths = [f"/v1/rooms/room-{n}/messages" for n in range(100)]
    try:
        load = await asyncio.to_thread(attack, write, paths, BODY, rate, seconds, headers)
    finally:
        stop.set()
        await probe
    return load, readable, unread


async def _one_message_through(write: str, downstream: str, headers: dict[str, str]) -> None:
    """One message through the whole pipeline, so the measurement starts with every stage running."""
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        answer = await client.post(
            f"{write}/v1/rooms/warm-up/messages", content=BODY, headers={"Content-Type": "application/json"}
        )
        answer.raise_for_status()
    await wait_received(downstream, 1, 60)


async def _end_to_end_at(bench: Bench, rate: int, seconds: float) -> dict[str, float]:
    async with (
        bench.topics() as kafka,
        bench.downstream() as downstream,
        bench.sqlite_services("e2e", kafka) as services,
    ):
        write = await services.write_api()
        read = await services.read_api()
        services.forwarder(MERLIN_ENDPOINTS_FILE=str(endpoints_file(bench.workdir, downstream, 100)))
        await _one_message_through(write.url or "", downstream, bench.headers())
        load, readable, unread = await _load_with_probe(
            write.url or "", read.url or "", rate, seconds, bench.headers()
        )
        accepted = {orjson.loads(s.body)["message_id"]: s for s in load.results if s.status == 202}
        received = await wait_received(downstream, set(accepted), 120)
    arrived = _first_arrivals(received)  # the first arrival of each message counts
    delivered = [arrived[m] - sent.sent_at for m, sent in accepted.items() if m in arrived]
    posted = [sent.latency_s for sent in load.results]
    return {
        "achieved_rate": len(accepted) / seconds,
        "errors": float(len(load.results) - len(accepted) + len(unread)),
        "post_p50_ms": _ms(posted)[0], "post_p99_ms": _ms(posted)[1],
        "readable_p50_ms": _ms(readable)[0], "readable_p99_ms": _ms(readable)[1],
        "delivered_p50_ms": _ms(delivered)[0], "delivered_p99_ms": _ms(delivered)[1],
        "vegeta_cpu_s": load.generator_cpu_seconds,
    }  # fmt: skip


async def end_to_end(bench: Bench, runs: int) -> list[Row]:
    """Open-loop POSTs at fixed rates: POST sent → readable (read-your-write) and → at the downstream."""
    rates = [100] if bench.quick else [500, 1000, 2000]
    seconds = 3 if bench.quick else 10
    rows: list[Row] = []
    for rate in rates:
        result = await median_of(runs, partial(_end_to_end_at, bench, rate, seconds))
        extra = {"errors": result["errors"], "vegeta_cpu_s": result["vegeta_cpu_s"],
                 "post_p50_ms": result["post_p50_ms"], "post_p99_ms": result["post_p99_ms"]}  # fmt: skip
        rows += [
            Row("end-to-end", f"{rate:,} msg/s: POST sent -> readable", "msg/s", result["achieved_rate"],
                rate, "offered rate", result["readable_p50_ms"], result["readable_p99_ms"], extra),
            Row("end-to-end", f"{rate:,} msg/s: POST sent -> downstream", "msg/s", result["achieved_rate"],
                rate, "offered rate", result["delivered_p50_ms"], result["delivered_p99_ms"], extra),
        ]  # fmt: skip
    return rows


# -- endpoint outage --------------------------------------------------------------------------------

_OUTAGES = {
    "up": "one endpoint, up",
    "down": "one endpoint, down (503)",
    "beside": "one endpoint up, another down (503)",
    "two": "two endpoints, both up",
}


def _first_arrivals(received: list[dict[str, Any]]) -> dict[str, float]:
    arrived: dict[str, float] = {}
    for record in received:
        message_id = record["body"]["message_id"]
        arrived[message_id] = min(arrived.get(message_id, record["at"]), record["at"])
    return arrived


async def _readable_while(bench: Bench, rate: int, seconds: float, case: str) -> dict[str, float]:
    """Open-loop load with endpoints as ``case``: POST sent -> readable, and -> at the healthy endpoint."""
    async with (
        bench.topics() as kafka,
        bench.downstream() as downstream,
        bench.sqlite_services("outage", kafka) as services,
    ):
        write, read = await services.write_api(), await services.read_api()
        # A small buffer: a design where a full buffer paused the shared partitions shows it in seconds.
        names = ("bench", "other") if case in ("beside", "two") else ("bench",)
        endpoints = endpoints_file(bench.workdir, downstream, 100, buffer=1_000, names=names)
        services.forwarder(MERLIN_ENDPOINTS_FILE=str(endpoints))
        await _one_message_through(write.url or "", downstream, bench.headers())
        if case in ("down", "beside"):
            await control(downstream, "bench" if case == "down" else "other", mode="fail", status=503,
                           seconds=3600)  # fmt: skip
        load, readable, unread = await _load_with_probe(
            write.url or "", read.url or "", rate, seconds, bench.headers()
        )
        accepted = {orjson.loads(s.body)["message_id"]: s for s in load.results if s.status == 202}
        received = [] if case == "down" else await wait_received(downstream, set(accepted), 120)
    arrived = _first_arrivals(received)
    delivered = [arrived[m] - sent.sent_at for m, sent in accepted.items() if m in arrived]
    result = {
        "achieved_rate": len(accepted) / seconds,
        "errors": float(len(load.results) - len(accepted) + len(unread)),
        "readable_p50_ms": _ms(readable)[0], "readable_p99_ms": _ms(readable)[1],
    }  # fmt: skip
    if delivered:
        result["delivered_p50_ms"], result["delivered_p99_ms"] = _ms(delivered)
    return result


async def outage(bench: Bench, runs: int) -> list[Row]:
    """POST sent -> readable with an endpoint down, beside the same with it up; and a healthy
    endpoint's delivery latency beside a failing one and beside a healthy one, against it alone."""
    rate, seconds = (100, 2) if bench.quick else (500, 20)
    rows: list[Row] = []
    results = {}
    for case, described in _OUTAGES.items():
        result = results[case] = await median_of(runs, partial(_readable_while, bench, rate, seconds, case))
        rows.append(
            Row("outage", f"{rate:,} msg/s, {described}: POST sent -> readable", "msg/s",
                result["achieved_rate"], rate, "offered rate", result["readable_p50_ms"],
                result["readable_p99_ms"], {"errors": result["errors"]})
        )  # fmt: skip
    alone = results["up"]
    for case, beside in (("beside", "a failing one"), ("two", "a healthy one")):
        result = results[case]
        rows.append(
            Row("outage", f"{rate:,} msg/s: POST sent -> healthy endpoint, p99 beside {beside}", "ms (p99)",
                result["delivered_p99_ms"], alone["delivered_p99_ms"], "the same endpoint alone",
                result["delivered_p50_ms"], result["delivered_p99_ms"],
                {"alone_p50_ms": alone["delivered_p50_ms"]})
        )  # fmt: skip
    return rows


# -- delivery --------------------------------------------------------------------------------------


async def _deliver_backlog(bench: Bench, count: int) -> dict[str, float]:
    async with bench.topics() as kafka, bench.downstream() as downstream:
        await _produce(kafka, [_created(f"room-{n % 100}") for n in range(count)])
        async with bench.sqlite_services("delivery", kafka) as services:
            services.forwarder(MERLIN_ENDPOINTS_FILE=str(endpoints_file(bench.workdir, downstream, 100)))
            received = await wait_received(downstream, count, 300)
    times = sorted(record["at"] for record in received)
    return {"deliveries_per_second": (len(times) - 1) / (times[-1] - times[0])}


async def _downstream_alone(bench: Bench, seconds: float) -> dict[str, float]:
    body = encode(_created("room-0")).decode().replace('"', '\\"')
    script = f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = "{body}"\n'
    async with bench.downstream() as downstream:
        result = await asyncio.to_thread(run_wrk, f"{downstream}/hooks/limit", script, 100, seconds)
    return result.as_dict()


async def _fairness(bench: Bench, hot: int, quiet_per_room: int) -> dict[str, float]:
    """A backlog of deliveries in one hot room; meanwhile 99 quiet rooms each get a few events.

    The quiet events are written once the hot room's events are all projected, so
    what they wait for is the dispatcher's turn-taking, not their place in the log.
    """
    async with bench.topics() as kafka, bench.downstream() as downstream:
        await _produce(kafka, [_created("hot") for _ in range(hot)])
        url = f"sqlite:///{bench.workdir / f'fair-{uuid.uuid4().hex[:6]}.db'}"
        await upgrade(url)
        services = bench.services(url, kafka=kafka)
        reads = ReadStore(create_engine(url), kafka.events_topic)
        try:
            services.forwarder(MERLIN_ENDPOINTS_FILE=str(endpoints_file(bench.workdir, downstream, 100)))

            async def projected() -> bool | None:
                return sum(offset + 1 for offset in (await reads.positions()).values()) >= hot or None

            await eventually(projected, 120, "the hot room projected")
            quiet: list[MessageCreated] = []
            for _ in range(quiet_per_room):
                round_ = [_created(f"quiet-{n}") for n in range(99)]
                await _produce(kafka, round_)
                quiet += round_
                await asyncio.sleep(0.2)
            received = await wait_received(downstream, hot + len(quiet), 300)
        finally:
            services.stop_all()
            await reads.close()
    occurred = {str(e.message_id): e.occurred_at.timestamp() for e in quiet}
    waited = [
        r["at"] - occurred[r["body"]["message_id"]] for r in received if r["body"]["message_id"] in occurred
    ]
    hot_times = sorted(r["at"] for r in received if r["body"]["room_id"] == "hot")
    last_quiet = max(r["at"] for r in received if r["body"]["message_id"] in occurred)
    p50, p99 = _ms(waited)
    return {"quiet_p50_ms": p50, "quiet_p99_ms": p99,
            "hot_room_per_second": (len(hot_times) - 1) / (hot_times[-1] - hot_times[0]),
            # > 0: the quiet rooms were all served while the hot room still had a backlog
            "hot_left_after_quiet_s": hot_times[-1] - last_quiet}  # fmt: skip


async def delivery(bench: Bench, runs: int) -> list[Row]:
    """Deliveries/s to a fast local downstream over 100 rooms; quiet rooms beside a hot one."""
    count = 500 if bench.quick else 20_000
    seconds = 2 if bench.quick else 10
    delivered = await median_of(runs, lambda: _deliver_backlog(bench, count))
    alone = await median_of(runs, lambda: _downstream_alone(bench, seconds))
    fair = await median_of(
        runs, lambda: _fairness(bench, 300 if bench.quick else 10_000, 2 if bench.quick else 5)
    )
    return [
        Row("delivery", f"{count:,} events, 100 rooms", "deliveries/s", delivered["deliveries_per_second"],
            alone["requests_per_second"], "the downstream alone (wrk)", None, None,
            {"downstream_p99_ms": alone["p99_ms"]}),
        Row("delivery", "quiet rooms beside a hot room's backlog", "hot room/s", fair["hot_room_per_second"],
            None, None, fair["quiet_p50_ms"], fair["quiet_p99_ms"],
            {"hot_left_after_quiet_s": fair["hot_left_after_quiet_s"]}),
    ]  # fmt: skip


# -- recovery --------------------------------------------------------------------------------------


async def _metrics(port: int) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=2) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("merlin_forwarder_records_total", "merlin_forwarder_assigned_partitions")
    }


async def _consuming(port: int, since: float) -> bool:
    try:
        metrics = await _metrics(port)
    except httpx.HTTPError:
        return False
    return metrics.get("merlin_forwarder_assigned_partitions", 0) > 0 and (
        metrics.get("merlin_forwarder_records_total", 0) > since
    )


async def _steady_load(kafka: KafkaSettings, stop: asyncio.Event, rate: int = 500) -> None:
    producer = AsyncProducer(kafka.client({"acks": "all", "enable.idempotence": True}))
    try:
        while not stop.is_set():
            events = [_created(f"room-{n}") for n in range(rate // 20)]
            sends = [
                producer.send(kafka.events_topic, encode(e), e.room_id.encode(), headers(e)) for e in events
            ]
            await asyncio.gather(*sends, asyncio.sleep(0.05))
    finally:
        await producer.close()


async def _recover(bench: Bench, instance_id: str | None = None) -> dict[str, float]:
    """SIGKILL a worker under load and restart it (under ``instance_id``, if given); then add one."""
    static = {"MERLIN_FORWARDER_INSTANCE_ID": instance_id} if instance_id else {}
    async with bench.topics() as kafka:
        url = f"sqlite:///{bench.workdir / f'recovery-{uuid.uuid4().hex[:6]}.db'}"
        await upgrade(url)
        services = bench.services(url, kafka=kafka)
        reads = ReadStore(create_engine(url), kafka.events_topic)
        stop = asyncio.Event()
        load = asyncio.create_task(_steady_load(kafka, stop))

        async def projected() -> int:
            return sum(offset + 1 for offset in (await reads.positions()).values())

        def moved_past(mark: int) -> Callable[[], Awaitable[bool | None]]:
            async def probe() -> bool | None:
                return await projected() > mark or None

            return probe

        try:
            first = services.forwarder(MERLIN_FORWARDER_METRICS_PORT=str(free_port()), **static)
            await eventually(moved_past(0), 60, "the projection moving")
            await asyncio.sleep(1)
            os.kill(first.process.pid, signal.SIGKILL)
            killed = time.perf_counter()
            await asyncio.to_thread(first.process.wait)
            mark = await projected()
            port_a = free_port()
            services.forwarder(MERLIN_FORWARDER_METRICS_PORT=str(port_a), **static)
            await eventually(moved_past(mark), 60, "the projection moving after a SIGKILL")
            after_kill = time.perf_counter() - killed
            await eventually(lambda: _consuming(port_a, 0), 30, "the restarted worker consuming")
            records_a = (await _metrics(port_a))["merlin_forwarder_records_total"]
            port_b = free_port()
            joined = time.perf_counter()
            services.forwarder(MERLIN_FORWARDER_METRICS_PORT=str(port_b))

            async def both() -> bool | None:
                return (await _consuming(port_b, 0) and await _consuming(port_a, records_a)) or None

            await eventually(both, 60, "both workers consuming")
            rebalance = time.perf_counter() - joined
        finally:
            stop.set()
            await load
            services.stop_all()
            await reads.close()
    return {"after_sigkill_s": after_kill, "rebalance_s": rebalance}


async def recovery(bench: Bench, runs: int) -> list[Row]:
    """SIGKILL → projection moving again (restarted at once); a second worker → both consuming."""
    result = await median_of(runs, lambda: _recover(bench))
    static = await median_of(runs, lambda: _recover(bench, f"bench-{uuid.uuid4().hex[:6]}"))
    session = int(bench.services("sqlite://").env()["MERLIN_FORWARDER_SESSION_TIMEOUT_MS"]) / 1000
    return [
        Row("recovery", f"SIGKILL, restart -> projection moving (session {session:g} s)", "s",
            result["after_sigkill_s"]),
        Row("recovery", "SIGKILL, restart, same instance id -> projection moving", "s",
            static["after_sigkill_s"]),
        Row("recovery", "second worker started -> both consuming", "s", result["rebalance_s"]),
    ]  # fmt: skip
