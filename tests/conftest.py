"""Fixtures that give tests the real local Kafka broker and PostgreSQL server.

The broker and the server are started once (or reused when already running);
each test gets its own topics and its own PostgreSQL schema.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import asyncpg
import pytest
import uvloop
from hypothesis import HealthCheck, settings

from kernel.settings import KafkaSettings
from kernel.topics import delete_topics, ensure_topics
from merlin.local import LocalKafka, LocalPostgres
from merlin.local.service_processes import FORKED

# Services start as children of a fork server that imported merlin once: the suite starts hundreds,
# and each fresh interpreter would spend 1 to 1.6 s of CPU on its imports. FORKED=0 starts them fresh.
os.environ.setdefault(FORKED, "1")

# Properties are checked by what they find, not by how fast: on two shared cores beside brokers and
# other workers one example can take longer than Hypothesis's 200 ms deadline, which would fail a
# test whose property holds. Each test's own examples budget still bounds its time.
settings.register_profile("shared-cores", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shared-cores")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests marked ``every_loop`` run on uvloop too: its transports differ from asyncio's."""
    if item.get_closest_marker("every_loop") is None:
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The bootstrap address of the real local broker, started if needed."""
    return LocalKafka().start().bootstrap


@pytest.fixture
async def kafka_settings(kafka_bootstrap: str) -> AsyncIterator[KafkaSettings]:
    """Settings whose events, dead-letter and settings topics exist only for this test."""
    settings = KafkaSettings().namespaced(
        f"test-{uuid.uuid4().hex[:10]}", bootstrap_servers=kafka_bootstrap, partitions=3, replication_factor=1
    )
    await ensure_topics(settings)
    yield settings
    await delete_topics(settings, settings.topics)


@dataclass(frozen=True)
class PostgresSchema:
    url: str  # a SQLAlchemy URL of the test database
    dsn: str  # the same for asyncpg
    schema: str


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The asyncpg DSN of the test database on the real local PostgreSQL."""
    return LocalPostgres().start().url("merlin_test", driver="postgresql")


async def create_schema(dsn: str, schema: str) -> None:
    """Create ``schema`` in the database at ``dsn`` (asyncpg's form)."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()


@pytest.fixture
async def postgres_schema(postgres_dsn: str) -> AsyncIterator[PostgresSchema]:
    """A PostgreSQL schema of this test's own, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    await create_schema(postgres_dsn, schema)
    try:
        yield PostgresSchema(
            url=postgres_dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            dsn=postgres_dsn,
            schema=schema,
        )
    finally:
        # A connection of its own: a test may have restarted the server meanwhile.
        connection = await asyncpg.connect(postgres_dsn)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()
