"""A real Prometheus (Debian's binary) scraping a running merlin: every panel of the shipped dashboard has
data, and the shipped alerts fire when their conditions are made true.

Prometheus scrapes and evaluates every second. The alert on an endpoint's oldest undelivered event
runs from a copy of alerts.yaml with its threshold and ``for:`` cut to seconds (``shortened_rules``);
the rules that fire at once (an endpoint disabled, dead letters, a flow restarting) run as shipped.
promtool's unit tests (tests/unit/test_observability.py) keep testing the shipped file itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from merlin.local.load import joined
from merlin.local.service_processes import Service, Services, eventually, free_port
from tests.downstream import Behaviour, Downstream
from tests.integration.hooks import all_delivered, endpoints_file, newest_is_readable, write_messages
from tests.observability import RULES, debian_tool, panel_queries

# Prometheus's intervals here, and the window the panels' rates are evaluated over.
SCRAPE = "1s"
WINDOW = "30s"
ROOMS = [f"room-{n}" for n in range(6)]  # over every partition of the test topics
UNDELIVERED = "MerlinEndpointUndeliveredTooOld"
# What the shortened copy of the rule holds to: seconds, not the shipped 15 minutes and 5 minutes.
UNDELIVERED_AFTER_SECONDS, UNDELIVERED_FOR = 3, "2s"


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` gives now; fails the test on an error (a bad query)."""
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(f"{self.url}/api/v1/query", params={"query": expr})
        assert answer.status_code == 200, f"{expr}: {answer.text}"
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(f"{self.url}/api/v1/alerts")
        assert answer.status_code == 200, answer.text
        alerts: list[dict[str, Any]] = answer.json()["data"]["alerts"]
        return alerts

    async def firing(self, alert: str, **labels: str) -> dict[str, Any] | None:
        """For ``eventually``: ``alert`` firing with ``labels``."""
        assert self.process.poll() is None, self.log.read_text()
        for found in await self.alerts():
            wanted = {"alertname": alert, **labels}
            if found["state"] == "firing" and all(found["labels"].get(k) == v for k, v in wanted.items()):
                return found
        return None


def shortened_rules(directory: Path) -> Path:
    """alerts.yaml with MerlinEndpointUndeliveredTooOld's threshold and ``for:`` in seconds."""
    loaded = yaml.safe_load(RULES.read_text())
    (rule,) = [
        rule for group in loaded["groups"] for rule in group["rules"] if rule.get("alert") == UNDELIVERED
    ]
    assert rule["expr"].count("> 900") == 1, rule["expr"]
    rule["expr"] = rule["expr"].replace("> 900", f"> {UNDELIVERED_AFTER_SECONDS}")
    rule["for"] = UNDELIVERED_FOR
    path = directory / "alerts.yaml"
    path.write_text(yaml.safe_dump(loaded, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def running_prometheus(
    directory: Path, targets: dict[str, list[str]], rules: Path
) -> AsyncIterator[Prometheus]:
    """Debian's Prometheus scraping ``targets`` (job → host:port) every second, evaluating ``rules``."""
    config = {
        "global": {"scrape_interval": SCRAPE, "scrape_timeout": SCRAPE, "evaluation_interval": SCRAPE},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": addresses}]}
            for job, addresses in targets.items()
        ],
    }
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    log = directory / "prometheus.log"
    port = free_port()  # Prometheus binds its own listener: a port taken meanwhile fails the start below
    command = [
        debian_tool("prometheus"),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    process = _spawn(command, log)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:

        async def ready() -> bool | None:
            assert process.poll() is None, f"prometheus exited:\n{log.read_text()}"
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{prometheus.url}/-/ready")).status_code == 200 or None
            except httpx.TransportError:
                return None

        await eventually(ready, 60, "prometheus ready")
        yield prometheus
    finally:
        process.terminate()  # by its pid
        try:
            await asyncio.to_thread(process.wait, 20)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


async def test_every_panel_has_data_and_an_endpoint_answering_503_fires_its_alerts(
    sqlite_services: Services,
    downstream: tuple[Downstream, str],
    tmp_path: Path,
) -> None:
    server, url = downstream
    for name in ("failing", "refusing"):
        server.behaviours[name] = Behaviour(mode="fail", status=503)
    services = sqlite_services
    # Each service's metrics listener, on a port of its own.
    names = ("write", "refusing_write", "read", "admin", "forwarder", "crashing_forwarder")
    ports = {name: free_port() for name in names}
    services.settings["MERLIN_KAFKA_STATISTICS_INTERVAL_MS"] = "1000"
    endpoints = endpoints_file(
        tmp_path,
        url,
        also={
            # Retried for ten minutes: its oldest undelivered event ages.
            "failing": {"retry": {"base": 0.05, "cap": 0.5, "max_attempts": 100_000, "max_elapsed": 600.0}},
            # Given up on at once: dead letters, then disabled after a second of failing.
            "refusing": {
                "retry": {"base": 0.05, "cap": 0.1, "max_attempts": 2, "max_elapsed": 10.0},
                "disable_after_seconds": 1,
            },
        },
    )
    forwarder = services.forwarder(
        **endpoints,
        MERLIN_FORWARDER_METRICS_PORT=str(ports["forwarder"]),
        MERLIN_FORWARDER_REPORT_EVERY="1",
    )
    # A forwarder whose read store is nowhere: its flow crashes and is restarted.
    services.forwarder(
        MERLIN_READ_STORE_URL=f"postgresql://merlin@127.0.0.1:{free_port()}/nowhere",
        MERLIN_FORWARDER_GROUP_ID=f"crashing-{services.kafka.events_topic}",
        MERLIN_FORWARDER_RESTART_MIN_BACKOFF="0.05",
        MERLIN_FORWARDER_RESTART_MAX_BACKOFF="1",
        MERLIN_FORWARDER_METRICS_PORT=str(ports["crashing_forwarder"]),
    )
    write = await services.write_api(MERLIN_WRITE_API_METRICS_PORT=str(ports["write"]))
    # A write API whose brokers are nowhere: it answers writes 503.
    refusing_write = await services.write_api(
        MERLIN_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        MERLIN_WRITE_API_DELIVERY_TIMEOUT_MS="1000",
        MERLIN_WRITE_API_METRICS_PORT=str(ports["refusing_write"]),
    )
    read = await services.read_api(MERLIN_READ_API_METRICS_PORT=str(ports["read"]))
    admin = await services.admin_api(MERLIN_ADMIN_API_METRICS_PORT=str(ports["admin"]))
    targets = {
        "merlin-write-api": [f"127.0.0.1:{ports['write']}", f"127.0.0.1:{ports['refusing_write']}"],
        "merlin-read-api": [f"127.0.0.1:{ports['read']}"],
        "merlin-admin-api": [f"127.0.0.1:{ports['admin']}"],
        "merlin-forwarder": [f"127.0.0.1:{ports['forwarder']}", f"127.0.0.1:{ports['crashing_forwarder']}"],
    }
    async with running_prometheus(tmp_path, targets, shortened_rules(tmp_path)) as prometheus:
        await eventually(joined(forwarder), 90, "the forwarder owning partitions")
        await _traffic(services, write, refusing_write, read, admin, url)
        await _stage_crash(services, write, forwarder)

        failing = await eventually(
            lambda: prometheus.firing(UNDELIVERED, endpoint="failing"), 120, f"{UNDELIVERED} for failing"
        )
        assert float(failing["value"]) > UNDELIVERED_AFTER_SECONDS
        assert failing["annotations"]["runbook_url"] == "docs/operations.md#merlinendpointundeliveredtooold"
        # The endpoint that takes its events stays quiet.
        assert not await prometheus.firing(UNDELIVERED, endpoint="hook")

        await eventually(
            lambda: prometheus.firing("MerlinEndpointDisabled", endpoint="refusing"), 120, "refusing disabled"
        )
        await eventually(
            lambda: prometheus.firing("MerlinDeadLetters", stage="delivery"), 120, "dead letters"
        )
        await eventually(
            lambda: prometheus.firing("MerlinFlowRestarting", flow="projection"), 120, "the flow restarting"
        )

        empty = await _panels_without_data(prometheus, deadline=time.monotonic() + 120)
        assert not empty, "panels without data:\n" + "\n".join(empty)


async def _traffic(
    services: Services, write: Service, refusing_write: Service, read: Service, admin: Service, url: str
) -> None:
    """Writes, reads and operators' calls on every API; writes answered 503; events to every endpoint."""
    sent = await write_messages(write, ROOMS, 3)
    async with httpx.AsyncClient(headers=write.headers, timeout=30) as client:
        await newest_is_readable(client, write, read, ROOMS[0], 3)
        refused = await client.post(
            f"{refusing_write.url}/v1/rooms/room-0/messages", json={"sender_id": "u1", "body": "nowhere"}
        )
        assert refused.status_code == 503, refused.text
    headers = {"Authorization": f"Bearer {services.admin_token}"}
    async with httpx.AsyncClient(base_url=admin.url or "", headers=headers, timeout=30) as client:
        assert (await client.get("/v1/admin/endpoints")).status_code == 200
    await all_delivered(url, sent, timeout=120)


async def _stage_crash(services: Services, write: Service, forwarder: Service) -> None:
    """The projection's store stage crashes on a missing table and is restarted once it is back."""
    database = services.store_url.removeprefix("sqlite:///")

    def rename(before: str, after: str) -> None:
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as connection, connection:
            connection.execute(f"ALTER TABLE {before} RENAME TO {after}")

    await asyncio.to_thread(rename, "messages", "messages_away")
    try:
        await write_messages(write, ROOMS[:1], 1)

        async def crashed() -> bool | None:
            crashes = forwarder.logged("stage_crashed")
            return any(c["flow"] == "projection" and "no such table" in c["error"] for c in crashes) or None

        await eventually(crashed, 60, "the projection's stage crashed")
    finally:
        await asyncio.to_thread(rename, "messages_away", "messages")


async def _panels_without_data(prometheus: Prometheus, deadline: float) -> list[str]:
    """Each panel query that still returns no series at ``deadline``, asked again every second."""
    waiting = panel_queries(WINDOW)
    while True:
        still = []
        for query in waiting:
            if not await prometheus.query(query.expr):
                still.append(query)
        waiting = still
        if not waiting or time.monotonic() > deadline:
            return [f"{query.panel} ({query.ref}): {query.expr}" for query in waiting]
        await asyncio.sleep(1)
