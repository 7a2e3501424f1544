"""What `merlin` says of the settings in the environment: unknown variables and bad values refused in one
line each before anything starts, and `merlin config`, the settings in force."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from merlin import services
from merlin.cli import main
from merlin.local.service_processes import FORKED
from tests import PROJECT_ROOT

SECRET = "a-jwt-secret-of-at-least-32-characters"


@pytest.fixture(autouse=True)
def merlin_environment(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No MERLIN_* variable but those a test sets; a service started is recorded, never run."""
    for name in list(os.environ):
        if name.upper().startswith("MERLIN_") and name != FORKED:
            monkeypatch.delenv(name)
    started: list[str] = []
    for run in ("run_write_api", "run_read_api", "run_admin_api", "run_forwarder"):
        monkeypatch.setattr(services, run, lambda *_args, _run=run: started.append(_run))
    return started


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.splitlines()


@pytest.mark.parametrize(
    "command", [["write-api"], ["forwarder", "--processes", "2"], ["dev"], ["kafka", "stop"]]
)
def test_a_misspelt_setting_stops_a_command_before_it_starts(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    merlin_environment: list[str],
    command: list[str],
) -> None:
    monkeypatch.setenv("MERLIN_WRITE_API_DELIVERY_TIMOUT_MS", "5")
    monkeypatch.setenv("MERLIN_KAFKA_BOOTSTRAP_SERVER", "x:1")
    assert main(command) == 2
    assert _errors(capsys) == [
        "merlin: error: MERLIN_KAFKA_BOOTSTRAP_SERVER is not a setting merlin knows; "
        "did you mean MERLIN_KAFKA_BOOTSTRAP_SERVERS?",
        "merlin: error: MERLIN_WRITE_API_DELIVERY_TIMOUT_MS is not a setting merlin knows; "
        "did you mean MERLIN_WRITE_API_DELIVERY_TIMEOUT_MS?",
    ]
    assert merlin_environment == []


def test_the_settings_that_pass_start_the_service(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], merlin_environment: list[str]
) -> None:
    monkeypatch.setenv("MERLIN_WRITE_API_DELIVERY_TIMEOUT_MS", "5000")
    monkeypatch.setenv("MERLIN_ADMIN_URL", "http://127.0.0.1:1")
    assert main(["write-api"]) == 0
    assert merlin_environment == ["run_write_api"]
    assert _errors(capsys) == []


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        (
            "MERLIN_WRITE_API_PORT", "eighty",
            "MERLIN_WRITE_API_PORT: Input should be a valid integer, unable to parse string as an integer "
            "(got 'eighty')",
        ),
        (
            "MERLIN_WRITE_API_PORT", "70000",
            "MERLIN_WRITE_API_PORT: Input should be less than or equal to 65535 (got '70000')",
        ),
        (
            "MERLIN_LOG_ACCESS", "maybe",
            "MERLIN_LOG_ACCESS: Input should be a valid boolean, unable to interpret input (got 'maybe')",
        ),
        (
            "MERLIN_KAFKA_SECURITY_PROTOCOL", "TLS",
            "MERLIN_KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or "
            "'SASL_SSL' (got 'TLS')",
        ),
        (
            "MERLIN_KAFKA_CLIENT_CONFIG", "{bad",
            "MERLIN_KAFKA_CLIENT_CONFIG: not a JSON object (Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1))",
        ),
        (
            "MERLIN_KAFKA_CLIENT_CONFIG", '{"ssl.ca.location": ["/ca.pem"]}',
            'MERLIN_KAFKA_CLIENT_CONFIG["ssl.ca.location"]: Input should be a valid string '
            "(got ['/ca.pem'])",
        ),
        (
            "MERLIN_KAFKA_CLIENT_CONFIG", '{"ssl.key.password": 1}',
            'MERLIN_KAFKA_CLIENT_CONFIG["ssl.key.password"]: Input should be a valid string',
        ),
        (
            "MERLIN_KAFKA_MIN_INSYNC_REPLICAS", "2",
            "KafkaSettings: Value error, MERLIN_KAFKA_MIN_INSYNC_REPLICAS (2) is above "
            "MERLIN_KAFKA_REPLICATION_FACTOR (1): no write could succeed",
        ),
        (
            "MERLIN_AUTH_JWT_SECRET", "short",
            "AuthSettings: Value error, MERLIN_AUTH_JWT_SECRET must be at least 32 characters",
        ),
    ],
)  # fmt: skip
def test_a_bad_value_is_one_line_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    merlin_environment: list[str],
    variable: str,
    value: str,
    line: str,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["write-api"]) == 2
    assert _errors(capsys) == [f"merlin: error: {line}"]
    assert merlin_environment == []


def test_a_bad_secret_is_named_but_never_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_ADMIN_TOKEN", "short-token")
    assert main(["admin-api"]) == 2
    assert _errors(capsys) == [
        "merlin: error: MERLIN_ADMIN_TOKEN: Value should have at least 16 items after validation, not 11"
    ]


def test_a_bad_item_of_a_list_is_named_by_its_place(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_LOCAL_POSTGRES_DATABASES", '["merlin", 7]')
    assert main(["dev"]) == 2
    assert _errors(capsys) == [
        "merlin: error: MERLIN_LOCAL_POSTGRES_DATABASES[1]: Input should be a valid string (got 7)"
    ]


def test_every_bad_value_of_a_service_is_told_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], merlin_environment: list[str]
) -> None:
    # The forwarder's parent reads its own settings only; its children would fail on the others.
    monkeypatch.setenv("MERLIN_FORWARDER_BATCH_MAX", "0")
    monkeypatch.setenv("MERLIN_KAFKA_PARTITIONS", "many")
    monkeypatch.setenv("MERLIN_ENDPOINTS_ALLOW_PRIVATE", "perhaps")
    assert main(["forwarder", "--processes", "2"]) == 2
    assert [line.split(":")[2].strip() for line in _errors(capsys)] == [
        "MERLIN_FORWARDER_BATCH_MAX",
        "MERLIN_KAFKA_PARTITIONS",
        "MERLIN_ENDPOINTS_ALLOW_PRIVATE",
    ]
    assert merlin_environment == []


def test_a_bad_list_read_by_a_command_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_LOCAL_POSTGRES_DATABASES", "merlin,merlin_test")
    assert main(["postgres", "status"]) == 2
    assert _errors(capsys) == [
        "merlin: error: MERLIN_LOCAL_POSTGRES_DATABASES: not a JSON list (Expecting value: line 1 column 1 "
        "(char 0))"
    ]


def _environment(**settings: str) -> dict[str, str]:
    """This process's environment without its MERLIN_* variables, with ``settings`` and merlin importable."""
    env = {name: value for name, value in os.environ.items() if not name.upper().startswith("MERLIN_")}
    return {**env, "PYTHONPATH": str(PROJECT_ROOT), **settings}


def _merlin(*arguments: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "merlin.cli", *arguments],
        env=_environment(**settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_service_with_bad_json_exits_with_one_line_and_no_traceback() -> None:
    done = _merlin("forwarder", MERLIN_KAFKA_CLIENT_CONFIG="{bad")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        "merlin: error: MERLIN_KAFKA_CLIENT_CONFIG: not a JSON object (Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1))"
    ]


def test_a_service_with_a_misspelt_setting_exits_with_one_line() -> None:
    done = _merlin("write-api", MERLIN_WRITE_API_DELIVERY_TIMOUT_MS="5")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        "merlin: error: MERLIN_WRITE_API_DELIVERY_TIMOUT_MS is not a setting merlin knows; "
        "did you mean MERLIN_WRITE_API_DELIVERY_TIMEOUT_MS?"
    ]


def _config(capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    assert main(["config", *arguments]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def test_config_shows_each_setting_with_its_value_and_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_WRITE_API_PORT", "9000")
    rows = {
        line.split()[0]: line.split()[1:]
        for line in _config(capsys, "write-api").splitlines()
        if line[:1] == "M"
    }
    assert rows["MERLIN_WRITE_API_PORT"] == ["9000", "environment"]
    assert rows["MERLIN_WRITE_API_HOST"] == ["127.0.0.1", "default"]
    assert rows["MERLIN_KAFKA_MIN_INSYNC_REPLICAS"] == ["(unset)", "default"]
    assert rows["MERLIN_LOG_ACCESS"] == ["true", "default"]
    assert not any(name.startswith(("MERLIN_FORWARDER_", "MERLIN_READ_STORE_")) for name in rows)


def test_config_masks_every_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = {
        "MERLIN_AUTH_JWT_SECRET": SECRET,
        "MERLIN_ADMIN_TOKEN": "an-admin-token-long-enough",
        "MERLIN_KAFKA_SASL_USERNAME": "merlin-forwarder",
        "MERLIN_KAFKA_SASL_PASSWORD": "kafka-password",
        "MERLIN_ENDPOINTS_SECRET_KEYS": "fernet-key-one,fernet-key-two",
        "MERLIN_ACCESS_ADMIN_API_PASSWORD": "admin-api-password",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(
        "MERLIN_KAFKA_CLIENT_CONFIG", '{"ssl.key.password": "tls-key-password", "acks": "all"}'
    )
    monkeypatch.setenv("MERLIN_READ_STORE_URL", "postgresql://merlin:store-password@db:5432/merlin")
    shown = _config(capsys, "all")
    for hidden in (*secrets.values(), "tls-key-password", "store-password"):
        if hidden != "merlin-forwarder":
            assert hidden not in shown
    document = json.loads(_config(capsys, "all", "--json"))
    values = {row["variable"]: row["value"] for row in document["settings"]}
    assert values["MERLIN_AUTH_JWT_SECRET"] == values["MERLIN_ENDPOINTS_SECRET_KEYS"] == "**********"
    assert values["MERLIN_KAFKA_SASL_USERNAME"] == "merlin-forwarder"
    assert values["MERLIN_KAFKA_CLIENT_CONFIG"] == {"ssl.key.password": "**********", "acks": "all"}
    assert values["MERLIN_READ_STORE_URL"] == "postgresql://merlin:**********@db:5432/merlin"
    assert values["MERLIN_ACCESS_WRITE_API_PASSWORD"] is None  # unset: nothing to hide


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # SQLAlchemy reads "/", "?" and "#" before the "@" as the password's, where urllib sees a path.
        ("postgresql://merlin:s3cr/et@db:5432/merlin", "postgresql://merlin:**********@db:5432/merlin"),
        ("postgresql://merlin:a?b#c@db/merlin", "postgresql://merlin:**********@db/merlin"),
        (
            "postgresql://merlin@db/merlin?password=hunter2&sslmode=require",
            "postgresql://merlin@db/merlin?password=**********&sslmode=require",
        ),
        ("sqlite+aiosqlite:////srv/merlin.db", "sqlite+aiosqlite:////srv/merlin.db"),
    ],
)
def test_a_store_urls_password_is_masked_however_it_is_written(
    url: str, shown: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_READ_STORE_URL", url)
    document = json.loads(_config(capsys, "forwarder", "--json"))
    (value,) = [row["value"] for row in document["settings"] if row["variable"] == "MERLIN_READ_STORE_URL"]
    assert value == shown


def test_a_json_setting_of_the_wrong_kind_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A list where an object belongs may still hold what the object would have: a password.
    monkeypatch.setenv("MERLIN_KAFKA_CLIENT_CONFIG", '["sasl.password=hunter2"]')
    assert main(["write-api"]) == 2
    lines = _errors(capsys)
    assert lines
    assert all("hunter2" not in line for line in lines)
    assert lines[0].startswith("merlin: error: MERLIN_KAFKA_CLIENT_CONFIG: ")


def test_config_json_is_for_machines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_FORWARDER_GROUP_ID", "projection")
    monkeypatch.setenv("MERLIN_KAFKA_PARTITIONS", "12")
    document = json.loads(_config(capsys, "admin-api", "--json"))
    assert document["service"] == "admin-api"
    rows = {row["variable"]: row for row in document["settings"]}
    assert rows["MERLIN_FORWARDER_GROUP_ID"] == {
        "variable": "MERLIN_FORWARDER_GROUP_ID",
        "value": "projection",
        "source": "environment",
        "settings": "AdminApiSettings",
    }
    assert (rows["MERLIN_KAFKA_PARTITIONS"]["value"], rows["MERLIN_KAFKA_PARTITIONS"]["source"]) == (
        12,
        "environment",
    )
    assert (rows["MERLIN_ADMIN_API_PORT"]["value"], rows["MERLIN_ADMIN_API_PORT"]["source"]) == (
        8083,
        "default",
    )
    assert [name for name in rows if name.endswith("TOKEN")] == ["MERLIN_ADMIN_TOKEN"]
    assert rows["MERLIN_ADMIN_TOKEN"]["value"] is None


def test_config_connects_to_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("merlin config connected")

    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setattr(socket, "getaddrinfo", refused)
    monkeypatch.setenv("MERLIN_AUTH_JWKS_URL", "https://keys.example/jwks.json")
    monkeypatch.setenv("MERLIN_KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    assert "kafka.example:9092" in _config(capsys, "all")


def test_config_refuses_what_the_services_would(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_LOG_LEVL", "DEBUG")
    monkeypatch.setenv("MERLIN_READ_API_MAX_PAGE_SIZE", "0")
    assert main(["config", "read-api"]) == 2
    assert _errors(capsys) == [
        "merlin: error: MERLIN_LOG_LEVL is not a setting merlin knows; did you mean MERLIN_LOG_LEVEL?",
        "merlin: error: MERLIN_READ_API_MAX_PAGE_SIZE: Input should be greater than or equal to 1 (got '0')",
    ]


def test_the_settings_piped_into_a_reader_that_stopped_end_quietly() -> None:
    # `merlin config all | head -1` once head has gone: a pipe whose reading end is closed before
    # merlin writes a line.
    reading, writing = os.pipe()
    os.close(reading)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "merlin.cli", "config", "all"],
            env=_environment(),
            stdout=writing, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(writing)
    assert (done.returncode, done.stderr) == (141, "")
