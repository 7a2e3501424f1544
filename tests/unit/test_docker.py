"""The Docker deployment cannot run here (no engine), so check that it fits the code it ships."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from forwarder.settings import ForwarderSettings
from kernel.auth import AuthSettings
from kernel.settings import PROJECT_ROOT, KafkaSettings
from merlin.cli import build_parser
from merlin.local.settings import LocalSettings
from read_api.settings import ReadApiSettings
from read_store.settings import ReadStoreSettings
from write_api.settings import WriteApiSettings

DOCKER = PROJECT_ROOT / "docker"
SETTINGS = (
    KafkaSettings,
    AuthSettings,
    LocalSettings,
    ReadStoreSettings,
    ReadApiSettings,
    WriteApiSettings,
    ForwarderSettings,
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


def test_compose_runs_the_three_services_and_its_set_up_steps() -> None:
    commands: set[tuple[str, ...]] = {tuple(spec["command"]) for spec in merlin_services().values()}  # type: ignore[arg-type]
    assert commands == {
        ("write-api",),
        ("read-api",),
        ("forwarder",),
        ("db", "upgrade"),
        ("topics", "create"),
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
