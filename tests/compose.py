"""docker/compose.yaml as Docker would see it: rendered by docker-compose (no engine needed)."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import PROJECT_ROOT
from webhooks.secret_box import new_key

DOCKER = PROJECT_ROOT / "docker"
# Installed by `make test` (a PyPI package): it validates and renders, it runs nothing.
DOCKER_COMPOSE = PROJECT_ROOT / ".cache" / "compose" / "bin" / "docker-compose"
EXAMPLE_ENV = DOCKER / ".env.example"


def example_env() -> dict[str, str]:
    """The variables docker/.env.example sets, by name."""
    lines = EXAMPLE_ENV.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def filled_env() -> dict[str, str]:
    """docker/.env filled in as its example says: each value the output of ``openssl rand -hex 32``,
    but a key of ``merlin endpoints new-key`` where the variable's comment asks for one."""
    filled: dict[str, str] = {}
    comment: list[str] = []
    for line in EXAMPLE_ENV.read_text().splitlines():
        if line.startswith("#") or not line:
            comment = [*comment, line] if line else []
            continue
        name = line.split("=", 1)[0]
        asks_for_a_key = any("merlin endpoints new-key" in text for text in comment)
        filled[name] = new_key() if asks_for_a_key else secrets.token_hex(32)
        comment = []
    return filled


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


# Run by docker-compose's own interpreter: its ``docker`` package lists a build context the way
# docker-compose sends it, .dockerignore read as docker-py reads it.
_CONTEXT = """
import json, os, sys
from docker.utils.build import exclude_paths
root, dockerfile = sys.argv[1], sys.argv[2]
ignore = os.path.join(root, ".dockerignore")
patterns = []
if os.path.exists(ignore):
    with open(ignore) as lines:
        patterns = [line.strip() for line in lines.read().splitlines()]
patterns = [pattern for pattern in patterns if pattern and not pattern.startswith("#")]
print(json.dumps(sorted(exclude_paths(root, patterns, dockerfile=dockerfile))))
"""


def build_context(root: Path, dockerfile: str = "docker/Dockerfile") -> set[str]:
    """The paths (files and folders, relative to ``root``) of the image's build context from ``root``."""
    python = DOCKER_COMPOSE.parent / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: `make test` installs it (docker-compose from PyPI)")
    listed = subprocess.run(
        [str(python), "-c", _CONTEXT, str(root), dockerfile],
        capture_output=True, text=True, check=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    paths: list[str] = json.loads(listed.stdout)
    return set(paths)
