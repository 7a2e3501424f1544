"""One distributed Kafka Connect worker on the local broker, driven over its REST API.

The worker's group and internal topics are named for one run (its ``name``); the topics are
deleted when it stops. It is stopped by its pid, never looked up by name.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.peers.jars import ConnectJars
from kernel.errors import InfrastructureError, ToolMissing
from kernel.settings import KafkaSettings
from kernel.topics import delete_topics
from merlin.local import processes
from merlin.local.service_processes import free_port

LOG4J = Path(__file__).resolve().parent / "worker" / "log4j2.properties"
_MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"


class ConnectorFailed(InfrastructureError):
    """A connector or one of its tasks reported FAILED; the message holds the worker's trace."""


@dataclass
class ConnectWorker:
    """A running worker: its REST address, its log, and what it made on the broker."""

    url: str
    pid: int
    marker: str  # on the worker's command line: guards against a reused pid when stopping it
    log: Path
    name: str
    kafka: KafkaSettings

    @property
    def topics(self) -> list[str]:
        return [f"{self.name}-{kind}" for kind in ("configs", "offsets", "status")]

    def tail(self) -> str:
        """The end of the worker's log, which lives only as long as the run's folder."""
        return processes.tail(self.log, 40)

    async def ready(self, plugins: tuple[str, ...], timeout: float = 180) -> None:
        """Wait until the worker has joined its group and lists ``plugins`` (connector classes)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            while True:
                if not processes.is_running(self.pid, self.marker):
                    raise InfrastructureError(
                        f"the Kafka Connect worker exited while starting; its log ends:\n{self.tail()}"
                    )
                with suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise InfrastructureError(
                        f"the Kafka Connect worker did not answer within {timeout:.0f} s; "
                        f"its log ends:\n{self.tail()}"
                    )
                await asyncio.sleep(0.5)
            listed = {plugin["class"] for plugin in (await client.get("/connector-plugins")).json()}
        missing = [plugin for plugin in plugins if plugin not in listed]
        if missing:
            raise InfrastructureError(
                f"the Kafka Connect worker does not list {', '.join(missing)}; its log ends:\n{self.tail()}"
            )

    async def create(self, name: str, config: dict[str, str]) -> None:
        """POST a connector; retried while the worker is between rebalances."""
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            for _ in range(60):
                answer = await client.post("/connectors", json={"name": name, "config": config})
                if answer.status_code != 409:  # 409: a rebalance is under way
                    break
                await asyncio.sleep(0.5)
            if answer.status_code != 201:
                raise InfrastructureError(f"creating connector {name}: {answer.status_code} {answer.text}")

    async def check(self, name: str) -> None:
        """Raise ConnectorFailed if ``name`` or any of its tasks failed."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            answer = await client.get(f"/connectors/{name}/status")
        if answer.status_code == 404:  # not yet known to the status topic's reader
            return
        status: dict[str, Any] = answer.json()
        for part in [status.get("connector", {}), *status.get("tasks", [])]:
            if part.get("state") == "FAILED":
                raise ConnectorFailed(f"connector {name} failed:\n{str(part.get('trace', ''))[:3000]}")

    async def delete(self, name: str) -> None:
        """Delete ``name`` and wait until the worker no longer lists it, so its tasks have stopped."""
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            await client.delete(f"/connectors/{name}")
            deadline = time.monotonic() + 60
            while name in (await client.get("/connectors")).json():
                if time.monotonic() > deadline:
                    raise InfrastructureError(f"connector {name} still listed 60 s after its deletion")
                await asyncio.sleep(0.2)


def _properties(jars: ConnectJars, kafka: KafkaSettings, name: str, port: int) -> dict[str, str]:
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": name,
        "listeners": f"http://127.0.0.1:{port}",
        "rest.advertised.host.name": "127.0.0.1",
        "rest.advertised.port": str(port),
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "config.storage.topic": f"{name}-configs",
        "config.storage.replication.factor": "1",
        "offset.storage.topic": f"{name}-offsets",
        "offset.storage.replication.factor": "1",
        "offset.storage.partitions": "5",
        "status.storage.topic": f"{name}-status",
        "status.storage.replication.factor": "1",
        "status.storage.partitions": "1",
        "offset.flush.interval.ms": "5000",
        "plugin.path": str(jars.plugins),
        # camel-kafka-connector 0.11 declares no ServiceLoader manifest: its plugin is found by scanning.
        "plugin.discovery": "hybrid_warn",
    }


def launch(jars: ConnectJars, kafka: KafkaSettings, workdir: Path, name: str) -> ConnectWorker:
    """Start the worker's JVM and return at once (it takes seconds to scan its plugins)."""
    java = shutil.which("java")
    if java is None:
        raise ToolMissing("Java 17+ is needed to run Kafka Connect, and `java` is not on PATH")
    port = free_port()
    properties = workdir / f"{name}.properties"
    properties.write_text(
        "".join(f"{key}={value}\n" for key, value in _properties(jars, kafka, name, port).items())
    )
    log = workdir / f"{name}.log"
    argv = [
        java, "-Xms512m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J}", "-cp", f"{jars.runtime}/*", _MAIN, str(properties),
    ]  # fmt: skip
    pid = processes.spawn_detached(argv, log, workdir, dict(os.environ))
    return ConnectWorker(f"http://127.0.0.1:{port}", pid, str(properties), log, name, kafka)


async def stop(worker: ConnectWorker) -> None:
    """Stop the worker by its pid and delete its topics; a worker stopped already is left alone."""
    if processes.is_running(worker.pid, worker.marker):
        await asyncio.to_thread(processes.terminate, worker.pid, worker.marker, 30)
    await delete_topics(worker.kafka, worker.topics)


@asynccontextmanager
async def connect_worker(
    jars: ConnectJars, kafka: KafkaSettings, workdir: Path, name: str
) -> AsyncIterator[ConnectWorker]:
    """A worker started for the block's duration; ``ready`` tells when it takes connectors."""
    worker = launch(jars, kafka, workdir, name)
    try:
        yield worker
    finally:
        await stop(worker)
