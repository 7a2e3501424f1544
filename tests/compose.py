"""docker/compose.yaml as Docker would see it: rendered by docker-compose (no engine needed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"
# Installed by `make test` (a PyPI package): it validates and renders, it runs nothing.
DOCKER_COMPOSE = PROJECT_ROOT / ".cache" / "compose" / "bin" / "docker-compose"
EXAMPLE_ENV = DOCKER / ".env.example"


def example_env() -> dict[str, str]:
    """The variables docker/.env.example sets, by name."""
    lines = EXAMPLE_ENV.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def render(
    env: dict[str, str], tmp_path: Path, profiles: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` of the deployment with ``env`` as its env file and ``profiles`` on."""
    if not DOCKER_COMPOSE.exists():
        pytest.fail(f"{DOCKER_COMPOSE} is missing: `make test` installs it (docker-compose from PyPI)")
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    command = [str(DOCKER_COMPOSE), "-f", str(DOCKER / "compose.yaml"), "--env-file", str(env_file)]
    command += [option for profile in profiles for option in ("--profile", profile)]
    command.append("config")
    return subprocess.run(command, capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"})


def rendered(env: dict[str, str], tmp_path: Path, profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The deployment as rendered with ``env``; fails the test when docker-compose refuses it."""
    result = render(env, tmp_path, profiles)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def broker_properties(environment: dict[str, Any]) -> dict[str, str]:
    """The broker properties the apache/kafka image derives from a container's ``KAFKA_*`` variables.

    Its rule: ``.`` is written ``_``, ``_`` is ``__`` and ``-`` is ``___``.
    """
    separators = {1: ".", 2: "_", 3: "-"}
    properties = {}
    for name, value in environment.items():
        if not name.startswith("KAFKA_") or name.endswith("_OPTS"):
            continue
        key = re.sub(r"_+", lambda run: separators[len(run.group())], name.removeprefix("KAFKA_"))
        properties[key.lower()] = str(value)
    return properties
