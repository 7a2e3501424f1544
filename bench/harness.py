"""What a benchmark run needs: the local broker, its own topics, services as processes, medians."""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from forwarder.worker import Forwarder
from kernel.auth import SCOPES, mint
from kernel.settings import KafkaSettings
from kernel.topics import delete_topics, ensure_topics
from merlin.heap import settled_heap
from merlin.local import LocalKafka
from merlin.local.postgres import PostgresStatus
from merlin.local.service_processes import Services, eventually, free_port
from read_store.migrate import upgrade
from read_store.reader import ReadStore


@dataclass
class Memory:
    """One process's resident memory over a soak (``bench.soak``), in MB of 1,024 KiB as ``ps`` counts."""

    process: str
    fresh_mb: float  # once it answered, before any load
    start_mb: float  # after the warm-up
    half_mb: float
    end_mb: float
    kb_per_1000_events: float  # least-squares slope over the measured part
    mb_per_hour: float
    second_half_kb_per_1000_events: float
    events: float  # accepted during the measured part
    # (minutes since the measured part began, events since then, RSS in MB); the warm-up's are before 0
    samples: list[tuple[float, float, float]] = field(default_factory=list)


# The scenario of the comparison's rows (bench.peers): their limit is the peer's figure, charted as a peer.
PEERS = "peers"


@dataclass
class Row:
    """One line of the results: merlin's figure and the limit measured beside it in the same run."""

    scenario: str
    measure: str
    unit: str
    merlin: float
    limit: float | None = None
    limit_name: str | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    extra: dict[str, float] | None = None
    memory: Memory | None = None
    # Other software whose figure ``limit`` is (named on the charts, never called a limit); None when
    # ``limit`` is a limit of this machine or the offered rate.
    peer: str | None = None

    @property
    def ratio(self) -> float | None:
        return None if not self.limit else self.merlin / self.limit


# One caller ("bench") sends all of the load: its rate limit is checked, never reached.
_SETTINGS = {"MERLIN_RATE_LIMIT_PER_SECOND": "1000000000"}


@dataclass
class Bench:
    kafka: KafkaSettings
    workdir: Path
    quick: bool
    # The soak's measured part (``bench.soak``); None: its default for a quick or a full run.
    soak_seconds: float | None = None
    soak_warm_up: int | None = None  # events before the soak's measured part; None: its default
    # Signs the token the load generators send; every service of the run verifies with it.
    auth_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    def headers(self) -> dict[str, str]:
        """``Authorization`` for the benchmarks' caller, "bench", in every room, with every scope."""
        token = mint(self.auth_secret, "bench", scopes=SCOPES, ttl_seconds=86_400)
        return {"Authorization": f"Bearer {token}"}

    def services(
        self, store_url: str, schema: str | None = None, kafka: KafkaSettings | None = None
    ) -> Services:
        return Services(
            kafka or self.kafka,
            store_url,
            self.workdir,
            schema,
            auth_secret=self.auth_secret,
            settings=_SETTINGS,
        )

    @asynccontextmanager
    async def topics(self) -> AsyncIterator[KafkaSettings]:
        """Topics of their own, for a scenario whose new consumer group must not see earlier events."""
        kafka = self.kafka.namespaced(f"bench-{uuid.uuid4().hex[:8]}")
        await ensure_topics(kafka)
        try:
            yield kafka
        finally:
            await delete_topics(kafka, kafka.topics)

    @asynccontextmanager
    async def sqlite_services(self, name: str, kafka: KafkaSettings) -> AsyncIterator[Services]:
        """Services on ``kafka`` with a migrated SQLite read store of their own; all stopped at the end."""
        url = f"sqlite:///{self.workdir / f'{name}-{uuid.uuid4().hex[:6]}.db'}"
        await upgrade(url)
        services = self.services(url, kafka=kafka)
        try:
            yield services
        finally:
            services.stop_all()

    def env(self, kafka: KafkaSettings | None = None) -> dict[str, str]:
        return self.services("sqlite://", kafka=kafka).env()

    async def limit(self, what: str, argument: int, kafka: KafkaSettings | None = None) -> dict[str, float]:
        """Run one of bench.limits in its own process; its JSON answer."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.limits", what, str(argument),
            env=self.env(kafka), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"bench.limits {what} failed: {err.decode()[-2000:]}")
        answer: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        return answer

    async def warm_up(self) -> None:
        """Push records through the broker until its JIT has settled.

        A freshly started broker used about twice the CPU per record (63% of a core
        at 1,000 msg/s, then 34% after a few hundred thousand records); without this
        the first scenario would pay for the broker's warm-up.
        """
        async with self.topics() as kafka:
            for _ in range(2):
                await self.limit("producer", 200_000, kafka)
                await self.limit("consumer", 200_000, kafka)

    @asynccontextmanager
    async def null_write_api(self) -> AsyncIterator[str]:
        """The write API's HTTP stack answering 202 without producing; its URL."""
        port = free_port()
        async with self.serving([sys.executable, "-m", "bench.limits", "http", str(port)], port) as url:
            yield url

    @asynccontextmanager
    async def downstream(self) -> AsyncIterator[str]:
        """The test downstream (``tests.downstream``) in its own process; its URL."""
        port = free_port()
        async with self.serving([sys.executable, "-m", "tests.downstream", "--port", str(port)], port) as url:
            yield url

    @asynccontextmanager
    async def serving(self, argv: list[str], port: int) -> AsyncIterator[str]:
        """Run ``argv`` (an HTTP server on ``port``) until the block ends; its URL once it answers."""
        process = await asyncio.create_subprocess_exec(
            *argv, env=self.env(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"

        async def up() -> bool | None:
            try:
                async with httpx.AsyncClient() as client:
                    await client.get(f"{url}/healthz")
                    return True
            except httpx.TransportError:
                return None

        try:
            await eventually(up, 30, f"{argv[-2:]} answering")
            yield url
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 10)


@asynccontextmanager
async def postgres_schema(postgres: PostgresStatus) -> AsyncIterator[tuple[str, str]]:
    """The test database's URL on ``postgres`` and a schema of its own for one measurement, dropped after."""
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(postgres.url("merlin_test", driver="postgresql"))
    await connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield postgres.url("merlin_test"), schema
    finally:
        await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await connection.close()


@asynccontextmanager
async def bench(
    quick: bool, soak_seconds: float | None = None, soak_warm_up: int | None = None
) -> AsyncIterator[Bench]:
    """The local broker (started if needed, then warmed up) and topics for this run only."""
    bootstrap = (await asyncio.to_thread(LocalKafka().start)).bootstrap
    kafka = KafkaSettings().namespaced(
        f"bench-{uuid.uuid4().hex[:8]}", bootstrap_servers=bootstrap, partitions=6
    )
    await ensure_topics(kafka)
    with tempfile.TemporaryDirectory(prefix="merlin-bench-") as workdir:
        try:
            environment = Bench(kafka, Path(workdir), quick, soak_seconds, soak_warm_up)
            if not quick:
                await environment.warm_up()
            yield environment
        finally:
            await delete_topics(kafka, kafka.topics)


Measure = Callable[[], Coroutine[Any, Any, dict[str, float]]]


async def median_of(runs: int, measure: Measure) -> dict[str, float]:
    """Each figure is the median over ``runs`` runs of ``measure``."""
    results = [await measure() for _ in range(runs)]
    return {key: statistics.median(result[key] for result in results) for key in results[0]}


async def projection_rate(forwarder: Forwarder, reads: ReadStore, count: int) -> float:
    """Events/s of ``forwarder``, run in this process, projecting ``count`` events; ``reads`` closed after."""
    stop = asyncio.Event()
    with settled_heap():  # as ``merlin forwarder`` sets it once built
        started = time.perf_counter()
        running = asyncio.create_task(forwarder.run(stop))
        try:
            while sum(offset + 1 for offset in (await reads.positions()).values()) < count:
                if running.done():
                    running.result()
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
        finally:
            stop.set()
            await running
            await reads.close()
    return count / elapsed
