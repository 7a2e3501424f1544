"""merlin's services as child processes on free ports, wired to given topics and store (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import orjson

from kernel.auth import ALL_ROOMS, READ, WRITE, mint
from kernel.settings import KafkaSettings
from merlin.local.forked import ForkedProcess
from webhooks.secret_box import new_key

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 30.0, what: str = "") -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    interval = 0.02
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what or probe}")
        await asyncio.sleep(interval)
        interval = min(interval * 2, 0.25)


# Set to "1", services start as children of a fork server that imported merlin once
# (``merlin.local.forked``), not as fresh interpreters: the test suite does, for speed.
FORKED = "MERLIN_LOCAL_SERVICES_FORKED"


class ServiceProcess(Protocol):
    """What a service is driven by: a ``subprocess.Popen`` or a ``ForkedProcess``."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, signum: int) -> None: ...
    def kill(self) -> None: ...


@dataclass
class Service:
    name: str
    process: ServiceProcess
    log: Path
    url: str | None = None
    # What a default caller sends to this API: "u1", every room, write and read.
    headers: dict[str, str] = field(default_factory=dict)
    auth_secret: str = ""

    def caller(self, subject: str, scopes: tuple[str, ...] = (WRITE, READ)) -> dict[str, str]:
        """``Authorization`` for ``subject`` (every room) at this API."""
        return {"Authorization": f"Bearer {mint(self.auth_secret, subject, scopes=scopes)}"}

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The structured log entries of ``event`` so far, each with ``at`` (Unix time) added."""
        entries = []
        for line in self.output().splitlines():
            if f'"{event}"' in line and line.startswith("{"):
                entry = orjson.loads(line)
                if entry.get("event") == event:
                    entry["at"] = datetime.fromisoformat(entry["timestamp"]).timestamp()
                    entries.append(entry)
        return entries


@dataclass
class Services:
    """Starts write APIs, read APIs, admin APIs and forwarders wired to one test's topics and read store."""

    kafka: KafkaSettings
    store_url: str
    workdir: Path
    store_schema: str | None = None
    running: list[Service] = field(default_factory=list)
    admin_token: str = field(default_factory=lambda: f"admin-{uuid.uuid4().hex}")
    # Settings every service of this set gets (before each call's own).
    settings: dict[str, str] = field(default_factory=dict)
    # Signs the callers' tokens the APIs verify (``token``, ``headers``).
    auth_secret: str = field(default_factory=lambda: f"auth-{uuid.uuid4().hex}{uuid.uuid4().hex}")
    # Seals the endpoints' secrets in the settings topic.
    endpoint_keys: str = field(default_factory=new_key)
    forked: bool = field(default_factory=lambda: os.environ.get(FORKED) == "1")

    def token(
        self,
        subject: str = "u1",
        rooms: tuple[str, ...] = (ALL_ROOMS,),
        scopes: tuple[str, ...] = (WRITE, READ),
    ) -> str:
        """A caller's bearer token that these services accept."""
        return mint(self.auth_secret, subject, scopes=scopes, rooms=rooms)

    def headers(
        self,
        subject: str = "u1",
        rooms: tuple[str, ...] = (ALL_ROOMS,),
        scopes: tuple[str, ...] = (WRITE, READ),
    ) -> dict[str, str]:
        """``Authorization`` for a caller of these services."""
        return {"Authorization": f"Bearer {self.token(subject, rooms, scopes)}"}

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **{name: value for name, value in os.environ.items() if name != FORKED},
            "MERLIN_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "MERLIN_KAFKA_EVENTS_TOPIC": self.kafka.events_topic,
            "MERLIN_KAFKA_DEAD_LETTER_TOPIC": self.kafka.dead_letter_topic,
            "MERLIN_KAFKA_SETTINGS_TOPIC": self.kafka.settings_topic,
            "MERLIN_KAFKA_REPLICATION_FACTOR": str(self.kafka.replication_factor),
            "MERLIN_KAFKA_MIN_INSYNC_REPLICAS": str(self.kafka.min_insync),
            "MERLIN_READ_STORE_URL": self.store_url,
            # No metrics listener on the fixed default ports: a test that scrapes one sets a free port.
            "MERLIN_FORWARDER_METRICS_PORT": "0",
            "MERLIN_WRITE_API_METRICS_PORT": "0",
            "MERLIN_READ_API_METRICS_PORT": "0",
            "MERLIN_ADMIN_API_METRICS_PORT": "0",
            "MERLIN_FORWARDER_GROUP_ID": f"forwarder-{self.kafka.events_topic}",
            "MERLIN_FORWARDER_SESSION_TIMEOUT_MS": "2000",
            "MERLIN_READ_API_POSITION_WAIT_SECONDS": "15",
            "MERLIN_ADMIN_TOKEN": self.admin_token,
            "MERLIN_AUTH_JWT_SECRET": self.auth_secret,
            "MERLIN_ENDPOINTS_SECRET_KEYS": self.endpoint_keys,
            # Tests and benchmarks call downstreams on this machine.
            "MERLIN_ENDPOINTS_ALLOW_NETWORKS": "127.0.0.0/8,::1/128",
        }
        if self.store_schema:
            env["MERLIN_READ_STORE_DB_SCHEMA"] = self.store_schema
        env.update(self.settings)
        env.update(extra)
        return env

    def _spawn(
        self, name: str, env: dict[str, str], url: str | None = None, listening: socket.socket | None = None
    ) -> Service:
        log = self.workdir / f"{name}-{len(self.running)}.log"
        process: ServiceProcess
        if self.forked and "PROMETHEUS_MULTIPROC_DIR" not in env:
            log.write_bytes(b"")  # emptied here, before the child appends: never another's lines
            process = ForkedProcess([name], env, str(log), listening)
        else:
            argv = [sys.executable, "-m", "merlin.cli", name]
            if listening is not None:
                argv += ["--fd", str(listening.fileno())]
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    argv, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    pass_fds=() if listening is None else (listening.fileno(),),
                )  # fmt: skip
        service = Service(name, process, log, url)
        self.running.append(service)
        return service

    async def _http(self, name: str, prefix: str, **extra: str) -> Service:
        # A single process is handed its socket already listening: a port looked up free and bound
        # later may be taken meanwhile (by any client's ephemeral port on a busy machine).
        listening = None if f"MERLIN_{prefix}_WORKERS" in extra else socket.create_server(("127.0.0.1", 0))
        port = free_port() if listening is None else listening.getsockname()[1]
        env = self.env(**{f"MERLIN_{prefix}_PORT": str(port), **extra})
        try:
            service = self._spawn(name, env, f"http://127.0.0.1:{port}", listening)
        finally:
            if listening is not None:
                listening.close()  # the child holds its own copy
        service.headers, service.auth_secret = self.headers(), self.auth_secret

        async def healthy() -> bool | None:
            assert service.process.poll() is None, f"{name} exited:\n{service.output()}"
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{service.url}/healthz")).status_code == 200 or None
            except httpx.TransportError:
                return None

        await eventually(healthy, 30, f"{name} answering")
        return service

    async def write_api(self, **extra: str) -> Service:
        return await self._http("write-api", "WRITE_API", **extra)

    async def read_api(self, **extra: str) -> Service:
        return await self._http("read-api", "READ_API", **extra)

    async def admin_api(self, **extra: str) -> Service:
        return await self._http("admin-api", "ADMIN_API", **extra)

    def forwarder(self, **extra: str) -> Service:
        return self._spawn("forwarder", self.env(**extra))

    def stop_all(self) -> None:
        for service in self.running:
            service.kill()
