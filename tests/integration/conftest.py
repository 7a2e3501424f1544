from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from kernel.settings import KafkaSettings
from merlin.local.service_processes import Services, free_port
from read_store.migrate import upgrade
from tests.browser import CHROMIUM, launched
from tests.conftest import PostgresSchema
from tests.downstream import Downstream, ServerThread
from tests.integration.hooks import SECRET


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
    _no_secret_in_the_logs(services)


@pytest.fixture
async def postgres_services(
    kafka_settings: KafkaSettings, postgres_schema: PostgresSchema, tmp_path: Path
) -> AsyncIterator[Services]:
    """merlin's services on this test's topics, with a migrated PostgreSQL read store."""
    await upgrade(postgres_schema.url, postgres_schema.schema)
    services = Services(kafka_settings, postgres_schema.url, tmp_path, postgres_schema.schema)
    yield services
    services.stop_all()
    _no_secret_in_the_logs(services)


def _no_secret_in_the_logs(services: Services) -> None:
    """After every test: the secrets its services were given appear in none of their logs."""
    secrets = {
        "admin token": services.admin_token,
        "auth secret": services.auth_secret,
        "webhook secret": SECRET,
    }
    for service in services.running:
        output = service.output()
        leaked = [name for name, secret in secrets.items() if secret in output]
        assert not leaked, f"{service.name} logged the {', '.join(leaked)} ({service.log})"


@pytest.fixture
def downstream() -> Iterator[tuple[Downstream, str]]:
    """A real downstream HTTP server on a free port, and its URL.

    Every call it gets is checked against the schemas merlin publishes for deliveries
    (``webhooks.payload_schemas``): a call that departs from them fails the test.
    """
    server = Downstream()
    with ServerThread(server, free_port()) as running:
        yield server, running.url
    server.assert_no_drift()


@pytest.fixture
def chromium_path() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's package")
    return CHROMIUM


@pytest.fixture
async def chromium(chromium_path: Path) -> AsyncIterator[Browser]:
    """Debian's headless Chromium, driven by Playwright (tests.browser)."""
    async with launched(chromium_path) as browser:
        yield browser
