"""merlin's own scripts run a real broker and a real PostgreSQL, and explain what is missing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
from confluent_kafka.admin import AdminClient

from kernel.settings import KafkaSettings
from kernel.topics import delete_topics, ensure_topics
from tests.conftest import PostgresSchema


def _merlin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "merlin.cli", *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_status_reports_the_running_broker(kafka_bootstrap: str) -> None:
    result = _merlin("kafka", "status")
    assert result.returncode == 0, result.stderr
    assert f"running at {kafka_bootstrap}" in result.stdout


def test_a_missing_java_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": str(tmp_path),  # neither java nor mvn
        "MERLIN_LOCAL_KAFKA_PORT": str(_free_port()),
        "MERLIN_LOCAL_VAR_DIR": str(tmp_path / "var"),
    }
    result = _merlin("kafka", "start", env=env)
    assert result.returncode == 2
    assert "Java 17+ is needed" in result.stderr
    assert "apt-get install" in result.stderr
    assert "Traceback" not in result.stderr


async def test_topics_are_created_from_settings_and_only_once(kafka_settings: KafkaSettings) -> None:
    wider = kafka_settings.model_copy(
        update={"events_topic": kafka_settings.events_topic + ".wide", "partitions": 5}
    )
    # The fixture made the dead-letter and settings topics already: only the new one is created.
    assert await ensure_topics(wider) == [wider.events_topic]
    try:
        metadata = AdminClient(wider.client()).list_topics(timeout=10)
        assert len(metadata.topics[wider.events_topic].partitions) == 5
        assert len(metadata.topics[wider.settings_topic].partitions) == 1
        assert await ensure_topics(wider) == []
    finally:
        await delete_topics(wider, [wider.events_topic])


async def test_each_test_gets_its_own_postgres_schema(postgres_schema: PostgresSchema) -> None:
    connection = await asyncpg.connect(postgres_schema.dsn)
    try:
        version = await connection.fetchval("SHOW server_version_num")
        assert int(version) >= 150000
        await connection.execute(f'CREATE TABLE "{postgres_schema.schema}".probe (n int)')
        schemas = await connection.fetch(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'probe'"
        )
        assert [row["table_schema"] for row in schemas] == [postgres_schema.schema]
    finally:
        await connection.close()
