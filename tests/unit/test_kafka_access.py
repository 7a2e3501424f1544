"""What each service may do on the broker (the ACL plan), and Kafka's security settings."""

from __future__ import annotations

import pytest

from kernel.settings import KafkaSettings
from merlin.cli import main
from merlin.kafka_access import AccessSettings, Grant, grants

KAFKA = KafkaSettings()
USERS = AccessSettings().users()


def allowed(operation: str, kind: str, name: str) -> set[str]:
    """The users allowed ``operation`` on the resource ``name`` of ``kind``."""
    return {
        g.user
        for g in grants(KAFKA, "merlin-forwarder", USERS)
        if g.kind == kind
        and g.operation == operation
        and (name.startswith(g.name) if g.prefixed else name == g.name)
    }


def test_only_the_write_api_writes_events_and_only_the_forwarder_writes_dead_letters() -> None:
    assert allowed("WRITE", "topic", KAFKA.events_topic) == {USERS["write_api"]}
    assert allowed("WRITE", "topic", KAFKA.dead_letter_topic) == {USERS["forwarder"]}
    assert allowed("WRITE", "topic", KAFKA.settings_topic) == {USERS["admin_api"], USERS["forwarder"]}


def test_events_are_read_by_the_forwarder_the_admin_api_and_the_read_api_in_no_group() -> None:
    readers = {USERS["forwarder"], USERS["admin_api"]}
    # The read API's live feed assigns every partition in no group (decision 0025).
    assert allowed("READ", "topic", KAFKA.events_topic) == {*readers, USERS["read_api"]}
    assert allowed("READ", "group", "merlin-forwarder.endpoint.crm") == readers
    assert allowed("READ", "group", "merlin-forwarder") == {USERS["forwarder"]}
    assert allowed("READ", "group", "another-team") == set()


def test_only_the_forwarder_sets_its_own_groups_configs() -> None:
    assert allowed("ALTER_CONFIGS", "group", "merlin-forwarder") == {USERS["forwarder"]}
    assert allowed("ALTER_CONFIGS", "group", "merlin-forwarder.endpoint.crm") == {USERS["forwarder"]}
    assert allowed("ALTER_CONFIGS", "group", "another-team") == set()
    assert allowed("ALTER_CONFIGS", "topic", KAFKA.events_topic) == set()


def test_a_grant_reads_as_an_operator_would_say_it() -> None:
    grant = Grant("merlin-forwarder", "group", "merlin-forwarder", "READ", prefixed=True)
    assert grant.describe() == "merlin-forwarder: READ on group merlin-forwarder*"


def test_applying_without_every_password_names_the_missing_ones(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_ACCESS_WRITE_API_PASSWORD", "a-password")
    assert main(["acls", "apply"]) == 2
    error = capsys.readouterr().err
    assert "MERLIN_ACCESS_READ_API_PASSWORD" in error
    assert "MERLIN_ACCESS_WRITE_API_PASSWORD" not in error


def test_sasl_without_credentials_is_one_line_and_the_password_never_shows(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MERLIN_KAFKA_SASL_PASSWORD", "kafka-password-1")
    assert main(["topics", "create"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "MERLIN_KAFKA_SASL_USERNAME" in error
    assert "kafka-password-1" not in error


def test_the_client_carries_the_credentials_and_the_settings_hide_them() -> None:
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="merlin-forwarder", sasl_password="kafka-password-2"
    )
    client = settings.client()
    assert client["sasl.mechanism"] == "SCRAM-SHA-512"
    assert client["sasl.password"] == "kafka-password-2"
    assert "kafka-password-2" not in repr(settings)
    assert "sasl.password" not in KafkaSettings().client()
