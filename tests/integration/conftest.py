from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernel.settings import KafkaSettings
from merlin.local.service_processes import Services
from read_store.migrate import upgrade
from tests.conftest import PostgresSchema


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration runs against the real broker or database."""
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
async def sqlite_services(kafka_settings: KafkaSettings, tmp_path: Path) -> AsyncIterator[Services]:
    """merlin's services on this test's topics, with a migrated SQLite read store."""
    url = f"sqlite:///{tmp_path / 'read.db'}"
    await upgrade(url)
    services = Services(kafka_settings, url, tmp_path)
    yield services
    services.stop_all()


@pytest.fixture
async def postgres_services(
    kafka_settings: KafkaSettings, postgres_schema: PostgresSchema, tmp_path: Path
) -> AsyncIterator[Services]:
    """merlin's services on this test's topics, with a migrated PostgreSQL read store."""
    await upgrade(postgres_schema.url, postgres_schema.schema)
    services = Services(kafka_settings, postgres_schema.url, tmp_path, postgres_schema.schema)
    yield services
    services.stop_all()
