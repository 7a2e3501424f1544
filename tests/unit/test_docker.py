"""The Docker deployment cannot run here (no engine), so check that it fits the code it ships."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from admin_api.settings import AdminApiSettings
from forwarder.settings import ForwarderSettings
from kernel.auth import AuthSettings
from kernel.settings import PROJECT_ROOT, KafkaSettings
from merlin.cli import build_parser
from merlin.kafka_access import AccessSettings
from merlin.local.settings import LocalSettings
from read_api.settings import ReadApiSettings
from read_store.settings import ReadStoreSettings
from tests.compose import DOCKER, example_env, render, rendered
from webhooks.settings import EndpointsSettings
from write_api.settings import WriteApiSettings

SETTINGS = (
    KafkaSettings,
    AccessSettings,
    AdminApiSettings,
    AuthSettings,
    LocalSettings,
    ReadStoreSettings,
    ReadApiSettings,
    WriteApiSettings,
    ForwarderSettings,
    EndpointsSettings,
)


def known_variables() -> set[str]:
    names: set[str] = set()
    for settings in SETTINGS:
        prefix = settings.model_config.get("env_prefix", "")
        names.update(f"{prefix}{field}".upper() for field in settings.model_fields)
    return names


def merlin_services() -> dict[str, dict[str, object]]:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return {name: spec for name, spec in compose["services"].items() if "build" in spec}


def test_compose_runs_the_four_services_and_its_set_up_steps() -> None:
    commands: set[tuple[str, ...]] = {tuple(spec["command"]) for spec in merlin_services().values()}  # type: ignore[arg-type]
    assert commands == {
        ("write-api",),
        ("read-api",),
        ("forwarder",),
        ("admin-api",),
        ("db", "upgrade"),
        ("topics", "create"),
        ("acls", "apply"),
    }


@pytest.mark.parametrize("name", sorted(merlin_services()))
def test_each_service_command_is_one_merlin_understands(name: str) -> None:
    command = merlin_services()[name]["command"]
    assert isinstance(command, list)
    build_parser().parse_args(command)  # exits (fails the test) on an unknown command


def test_every_merlin_variable_in_the_deployment_is_a_setting() -> None:
    files = [DOCKER / "compose.yaml", DOCKER / "Dockerfile"]
    used = {name for path in files for name in re.findall(r"\bMERLIN_[A-Z_]+\b", path.read_text())}
    assert used, "the deployment configures merlin"
    assert used <= known_variables(), used - known_variables()


def test_the_image_copies_every_package() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, flags=re.MULTILINE))
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    shipped = {name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert shipped == {path.parent.name for path in Path(PROJECT_ROOT).glob("*/__init__.py")} - {
        "tests",
        "bench",
    }
    assert shipped <= copied


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file as docker-compose renders it with the example's secrets."""
    return rendered(example_env(), tmp_path_factory.mktemp("compose"))


def test_docker_compose_accepts_the_deployment_and_names_every_missing_secret(tmp_path: Path) -> None:
    secrets = example_env()
    assert render(secrets, tmp_path).returncode == 0
    for name in secrets:
        refused = render({k: v for k, v in secrets.items() if k != name}, tmp_path)
        assert refused.returncode != 0, f"the deployment starts without {name}"
        assert f"set {name} in docker/.env" in refused.stderr


def test_only_the_apis_are_published_and_the_admin_api_only_on_loopback(deployment: dict[str, Any]) -> None:
    published = {
        name: sorted(_published(port) for port in spec["ports"])
        for name, spec in deployment["services"].items()
        if spec.get("ports")
    }
    assert published == {
        "write-api": [("", 8081)],
        "read-api": [("", 8082)],
        "admin-api": [("127.0.0.1", 8083)],
    }


def _published(port: str | dict[str, Any]) -> tuple[str, int]:
    """(host address, host port) of a rendered port, long form or ``host:published:target/tcp``."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), int(port["published"])
    host, published, _target = port.rsplit(":", 2) if port.count(":") == 2 else ("", *port.split(":"))
    return host, int(published)


def test_kafka_and_postgres_are_only_on_the_internal_network(deployment: dict[str, Any]) -> None:
    assert deployment["networks"]["backend"].get("internal") is True
    services = deployment["services"]
    for name in ("kafka-1", "kafka-2", "kafka-3", "postgres"):
        assert set(services[name]["networks"]) == {"backend"}, name
    reaching_out = {name for name, spec in services.items() if "edge" in spec["networks"]}
    assert reaching_out == {"write-api", "read-api", "admin-api", "forwarder"}


def test_no_password_is_written_in_the_deployment_itself(deployment: dict[str, Any]) -> None:
    text = (DOCKER / "compose.yaml").read_text()
    assert "merlin:merlin@" not in text
    secrets = set(example_env().values())
    for name, spec in deployment["services"].items():
        for variable, value in spec.get("environment", {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", variable):
                assert str(value) in secrets, f"{name}: {variable} is not from docker/.env"


def test_the_env_file_with_the_real_secrets_is_never_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(DOCKER / ".env")], cwd=DOCKER, check=False
    )  # fmt: skip
    assert ignored.returncode == 0


def test_every_kafka_client_authenticates_as_the_user_acls_apply_creates(deployment: dict[str, Any]) -> None:
    users = AccessSettings().users()
    expected = {
        "write-api": users["write_api"],
        "read-api": users["read_api"],
        "admin-api": users["admin_api"],
        "forwarder": users["forwarder"],
        "acls": "admin",
        "topics": "admin",
    }
    for name in set(merlin_services()) - {"migrate"}:
        environment = deployment["services"][name]["environment"]
        assert environment["MERLIN_KAFKA_SECURITY_PROTOCOL"].startswith("SASL_"), name
        assert environment["MERLIN_KAFKA_SASL_USERNAME"] == expected[name], name
    broker = deployment["services"]["kafka-1"]["environment"]
    assert broker["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert "PLAINTEXT:PLAINTEXT" not in broker["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
