"""Live settings with three forwarder processes: how long an endpoint's change takes to be applied on
every instance, and what a URL changed under load costs the events on their way.

A change is applied when a forwarder logs it (``endpoint_starting`` for a new endpoint,
``endpoint_reconfigured`` for a changed one, with the version); the figure per change is from
the ``PUT`` leaving to the last of the three logging it. The URL change moves the endpoint from
``/hooks/bench`` to ``/hooks/moved`` half-way through open-loop load; every accepted message
must arrive at one or the other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import orjson

from bench.harness import Bench, Row, median_of
from bench.pipeline import BODY, SECRET, deliveries, percentile
from bench.vegeta import attack
from merlin.local.load import joined
from merlin.local.service_processes import Service, eventually

_FORWARDERS = 3
_NAMES = ("bench", "moved")


def _applied(workers: list[Service], event: str, version: int) -> Callable[[], Awaitable[float | None]]:
    """For ``eventually``: when the last of ``workers`` logged ``event`` for ``version`` (Unix time)."""

    async def everywhere() -> float | None:
        times: list[float] = []
        for worker in workers:
            at = [float(e["at"]) for e in worker.logged(event) if e.get("version") == version]
            if not at:
                return None
            times.append(at[0])
        return max(times)

    return everywhere


async def _put(admin: httpx.AsyncClient, downstream: str, target: str) -> tuple[float, int]:
    """Point endpoint ``bench`` at ``/hooks/<target>``; when the PUT left, and the version it made."""
    body = {"url": f"{downstream}/hooks/{target}", "secret": SECRET, "max_in_flight": 100}
    sent = time.time()
    answer = await admin.put("/v1/admin/endpoints/bench", json=body)
    answer.raise_for_status()
    return sent, int(answer.json()["version"])


async def _put_applied(
    admin: httpx.AsyncClient, downstream: str, target: str, workers: list[Service]
) -> float:
    """PUT, then wait until every worker applied it; seconds from the PUT leaving to the last."""
    sent, version = await _put(admin, downstream, target)
    event = "endpoint_starting" if version == 1 else "endpoint_reconfigured"
    try:
        what = f"version {version} on every worker"
        applied = await eventually(_applied(workers, event, version), 30, what)
    except AssertionError as missed:
        raise AssertionError(f"{missed}\n{_told(workers, event)}") from None
    return applied - sent


def _told(workers: list[Service], event: str) -> str:
    """What each worker logged of ``event``, and its last lines: why a change did not reach it."""
    told = []
    for n, worker in enumerate(workers):
        versions = [entry.get("version") for entry in worker.logged(event)]
        told.append(f"worker {n} (pid {worker.process.pid}): {event} versions {versions}")
        told.extend(f"  {line}" for line in worker.output().splitlines()[-15:])
    return "\n".join(told)


async def _received(downstream: str) -> dict[str, list[dict[str, Any]]]:
    return {name: await deliveries(downstream, name) for name in _NAMES}


async def _live(bench: Bench, changes: int, rate: int, seconds: float) -> dict[str, float]:
    async with (
        bench.topics() as kafka,
        bench.downstream() as downstream,
        bench.sqlite_services("settings", kafka) as services,
    ):
        write, admin_api = await services.write_api(), await services.admin_api()
        workers = [services.forwarder() for _ in range(_FORWARDERS)]
        for worker in workers:
            await eventually(joined(worker), 60, "every forwarder owning partitions")
        headers = {"Authorization": f"Bearer {services.admin_token}"}
        async with httpx.AsyncClient(base_url=admin_api.url or "", headers=headers, timeout=30) as admin:
            applied = [await _put_applied(admin, downstream, _NAMES[n % 2], workers) for n in range(changes)]
            if changes % 2:  # the load starts at /hooks/bench
                await _put_applied(admin, downstream, "bench", workers)

            paths = [f"/v1/rooms/room-{n}/messages" for n in range(100)]
            load = asyncio.create_task(
                asyncio.to_thread(attack, write.url or "", paths, BODY, rate, seconds, bench.headers())
            )
            await asyncio.sleep(seconds / 2)
            changed_at, version = await _put(admin, downstream, "moved")
            moved_at = await eventually(
                _applied(workers, "endpoint_reconfigured", version), 30, "the URL change everywhere"
            )
            results = (await load).results
        accepted = {orjson.loads(s.body)["message_id"]: s for s in results if s.status == 202}

        async def all_arrived() -> dict[str, list[dict[str, Any]]] | None:
            received = await _received(downstream)
            ids = {r["body"]["message_id"] for records in received.values() for r in records}
            return received if set(accepted) <= ids else None

        received = await eventually(all_arrived, 120, "every accepted message at one URL or the other")
    first: dict[str, tuple[float, str]] = {}
    for name, records in received.items():
        for record in records:
            message = record["body"]["message_id"]
            if message not in first or record["at"] < first[message][0]:
                first[message] = (record["at"], name)
    latency = [first[m][0] - sent.sent_at for m, sent in accepted.items()]
    around = [first[m][0] - s.sent_at for m, s in accepted.items() if abs(s.sent_at - changed_at) < 1.0]
    return {
        "applied_p50_ms": percentile(applied, 0.5) * 1000,
        "applied_p99_ms": percentile(applied, 0.99) * 1000,
        "url_change_applied_ms": (moved_at - changed_at) * 1000,
        "achieved_rate": len(accepted) / seconds,
        "delivered_p50_ms": percentile(latency, 0.5) * 1000,
        "delivered_p99_ms": percentile(latency, 0.99) * 1000,
        "around_change_p99_ms": percentile(around or [0.0], 0.99) * 1000,
        # Arrived first at the old URL though sent after the change was applied everywhere.
        "old_url_after_applied": float(
            sum(1 for m, s in accepted.items() if s.sent_at > moved_at and first[m][1] == "bench")
        ),
        "errors": float(len(results) - len(accepted)),
    }


async def live_settings(bench: Bench, runs: int) -> list[Row]:
    """Three forwarders: PUT → applied on all of them, and deliveries through a URL change under load."""
    changes, rate, seconds = (4, 50, 3.0) if bench.quick else (40, 500, 10.0)
    result = await median_of(runs, partial(_live, bench, changes, rate, seconds))
    return [
        Row("settings", f"endpoint PUT -> applied on all {_FORWARDERS} forwarders ({changes} changes)", "ms",
            result["applied_p50_ms"], None, None, result["applied_p50_ms"], result["applied_p99_ms"],
            {"errors": 0.0}),
        Row("settings", f"{rate:,} msg/s, URL changed half-way: POST sent -> downstream", "msg/s",
            result["achieved_rate"], rate, "offered rate", result["delivered_p50_ms"],
            result["delivered_p99_ms"],
            {"url_change_applied_ms": result["url_change_applied_ms"],
             "around_change_p99_ms": result["around_change_p99_ms"],
             "old_url_after_applied": result["old_url_after_applied"], "errors": result["errors"]}),
    ]  # fmt: skip
