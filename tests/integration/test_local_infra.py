"""merlin's own scripts run a real broker and a real PostgreSQL, and explain what is missing."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from kernel.settings import KafkaSettings
from kernel.topics import TopicsMismatch, delete_topics, ensure_topics
from merlin.local import LocalKafka
from merlin.local.kafka import answers_metadata
from merlin.local.settings import LocalSettings
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


def test_a_cluster_id_that_starts_with_a_dash_formats_and_the_broker_runs(tmp_path: Path) -> None:
    # Base64 of random bytes starts with "-" one time in 64; Kafka's own tool took it for an option.
    # Below the ephemeral range, so no client's socket holds it (or the controller's, port + 1).
    port = int(os.environ.get("TEST_DASHED_KAFKA_PORT", "19392"))
    broker = LocalKafka(
        LocalSettings(var_dir=tmp_path), port, cluster_id="-" + "A" * 21, state_dir=tmp_path / "kafka"
    )
    try:
        assert broker.start().bootstrap == f"127.0.0.1:{port}"
        assert answers_metadata(broker.bootstrap, 10)
    finally:
        broker.stop()


def test_stop_and_status_find_a_cluster_without_being_told_its_size(tmp_path: Path) -> None:
    # Below the ephemeral range and apart from the other tests' brokers (19092, 19392, 19492).
    env = {**os.environ, "MERLIN_LOCAL_KAFKA_PORT": "19592", "MERLIN_LOCAL_VAR_DIR": str(tmp_path)}
    started = _merlin("kafka", "start", "--brokers", "2", env=env)
    try:
        assert started.returncode == 0, started.stderr
        status = _merlin("kafka", "status", env=env)
        assert status.returncode == 0, status.stderr
        assert "node 1: kafka: running at 127.0.0.1:19592 (pid" in status.stdout
        assert "node 2: kafka: running at 127.0.0.1:19594 (pid" in status.stdout
        stopped = _merlin("kafka", "stop", env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert "kafka: stopped 2 of 2 brokers" in stopped.stdout
        after = _merlin("kafka", "status", env=env)
        assert after.returncode == 3
        assert "kafka: not running (would listen on 127.0.0.1:19592)" in after.stdout
    finally:
        _merlin("kafka", "stop", "--brokers", "2", env=env)


async def test_topics_are_created_from_settings_and_only_once(kafka_settings: KafkaSettings) -> None:
    wider = kafka_settings.namespaced(f"{kafka_settings.events_topic}.wide", partitions=5)
    assert sorted((await ensure_topics(wider)).created) == sorted(wider.topics)
    try:
        metadata = AdminClient(wider.client()).list_topics(timeout=10)
        assert len(metadata.topics[wider.events_topic].partitions) == 5
        assert len(metadata.topics[wider.settings_topic].partitions) == 1
        again = await ensure_topics(wider)
        assert (again.created, again.altered) == ([], [])
        assert again.lines() == ["topics: all present, as the settings say"]
    finally:
        await delete_topics(wider, wider.topics)


async def test_the_log_is_kept_for_ever_and_never_led_by_an_unclean_replica(
    kafka_settings: KafkaSettings,
) -> None:
    # The controller commits the new topics; the broker that answers a describe applies them a moment later.
    assert await retention_seen(kafka_settings, "-1") == "-1"
    configs = await topic_configs(kafka_settings, kafka_settings.events_topic)
    assert configs["retention.bytes"] == "-1"
    assert configs["unclean.leader.election.enable"] == "false"
    assert configs["min.insync.replicas"] == "1"
    assert await retention_seen(kafka_settings, "-1", topic=kafka_settings.dead_letter_topic) == "-1"


async def test_existing_topics_are_brought_to_the_settings_and_what_cannot_change_is_refused(
    kafka_settings: KafkaSettings,
) -> None:
    week = kafka_settings.model_copy(update={"retention_ms": 604_800_000})
    report = await ensure_topics(week)
    assert report.altered == [
        f"{week.events_topic}: retention.ms -1 -> 604800000",
        f"{week.dead_letter_topic}: retention.ms -1 -> 604800000",
    ]
    # The controller commits the change; the broker that answers a describe applies it a moment later.
    assert await retention_seen(week, "604800000") == "604800000"

    more = kafka_settings.model_copy(update={"partitions": kafka_settings.partitions + 1})
    with pytest.raises(TopicsMismatch) as refused:
        await ensure_topics(more)
    assert f"{more.events_topic} has {kafka_settings.partitions} partitions" in str(refused.value)
    # Refused as a whole: not even the retention, which could change, was touched.
    assert (await topic_configs(more, more.events_topic))["retention.ms"] == "604800000"

    three = kafka_settings.model_copy(update={"replication_factor": 3, "min_insync_replicas": 2})
    with pytest.raises(TopicsMismatch, match="replication factor 1 where the settings say 3"):
        await ensure_topics(three)


async def retention_seen(
    settings: KafkaSettings, wanted: str, within: float = 10.0, topic: str | None = None
) -> str:
    """A topic's retention (the events topic's by default) once it reads `wanted`, or as last described
    after `within` s. A topic just created may be unknown to the broker that answers for a moment."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            seen = (await topic_configs(settings, topic or settings.events_topic))["retention.ms"]
        except KafkaException:
            if asyncio.get_running_loop().time() > deadline:
                raise
            seen = ""
        if seen == wanted or asyncio.get_running_loop().time() > deadline:
            return seen
        await asyncio.sleep(0.1)


async def topic_configs(settings: KafkaSettings, topic: str) -> dict[str, str]:
    admin = AdminClient(settings.client())
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = await asyncio.wrap_future(admin.describe_configs([resource])[resource])
    return {name: entry.value for name, entry in entries.items()}


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
