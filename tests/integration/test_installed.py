"""merlin as a user gets it: a wheel installed in a fresh virtualenv, run outside the checkout.

The wheel is built from a copy of what it ships (as the Dockerfile does), installed with its
dependencies from PyPI and nothing else, so an import of a package that only came through the
development environment fails here. From a folder of its own, with a home of its own, the
installed ``merlin dev`` must answer the README's session, keeping its state in the user's data
directory: nothing in site-packages, nothing in the working directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kernel.http.explorer import ASSETS
from merlin.live_page import ASSETS as LIVE_PAGE_ASSETS
from merlin.local import LocalKafka, processes
from merlin.local.service_processes import eventually, free_port
from merlin.local.settings import LocalSettings
from tests import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
SHIPPED = [name.rstrip("*") for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]
# Fixed, below the ephemeral range (no client's socket holds it or the controller's, port + 1).
KAFKA_PORT = int(os.environ.get("TEST_INSTALLED_KAFKA_PORT", "19492"))
# Where the README's session runs against; the test gives each service a free port instead.
README_HOSTS = {"write": "localhost:8081", "read": "localhost:8082"}
MARK = "--- end of answer ---"


@dataclass(frozen=True)
class Installed:
    venv: Path
    site_packages: Path
    home: Path  # the user's home: state goes under it
    workdir: Path  # where the user runs merlin: empty, outside the checkout

    @property
    def merlin(self) -> str:
        return str(self.venv / "bin" / "merlin")

    @property
    def var_dir(self) -> Path:
        return self.home / ".local" / "share" / "merlin"

    def env(self, **settings: str) -> dict[str, str]:
        """The machine's environment less the test run's own: its PYTHONPATH, merlin's and XDG's variables."""
        kept = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("MERLIN_", "XDG_", "PYTHON", "VIRTUAL_ENV"))
        }
        return {**kept, "HOME": str(self.home), **settings}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    assert not root.is_relative_to(PROJECT_ROOT)
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(PROJECT_ROOT / name, source / name)
    for package in SHIPPED:
        shutil.copytree(
            PROJECT_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(source)])
    (wheel,) = (root / "dist").glob("*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)])
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    (root / "home").mkdir()
    (root / "work").mkdir()
    return Installed(venv, Path(site), root / "home", root / "work")


def _run(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=cwd, check=False)
    assert done.returncode == 0, f"{argv[:4]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_installed_command_says_its_version_and_runs_from_site_packages(installed: Installed) -> None:
    version = _run([installed.merlin, "--version"], env=installed.env(), cwd=installed.workdir)
    assert version == f"{PYPROJECT['project']['name']} {PYPROJECT['project']['version']}\n"
    where = _run(
        [
            str(installed.venv / "bin" / "python"),
            "-c",
            "import kernel.state_dirs as s; print(s.CODE_ROOT, s.CHECKOUT)",
        ],
        env=installed.env(),
        cwd=installed.workdir,
    )
    assert where == f"{installed.site_packages} None\n"


def test_the_installed_api_explorer_finds_every_asset_in_site_packages(installed: Installed) -> None:
    """The wheel carries the explorer's own script and style, and fastapi-offline came with Swagger UI."""
    found = _run(
        [
            str(installed.venv / "bin" / "python"),
            "-c",
            "from kernel.http.explorer import ASSETS, missing_assets\n"
            "print(missing_assets())\n"
            "for asset in ASSETS.values(): print(asset.file())",
        ],
        env=installed.env(),
        cwd=installed.workdir,
    ).splitlines()
    assert found[0] == "[]"
    assert len(found) == 1 + len(ASSETS)
    assert all(Path(path).is_relative_to(installed.site_packages) for path in found[1:]), found


async def test_merlin_dev_installed_answers_the_readme_session_and_keeps_its_state_in_the_users_data(
    installed: Installed,
) -> None:
    before = _files(installed.site_packages)
    ports = {
        name: free_port()
        for name in ("write", "read", "admin", "forwarder", "m_write", "m_read", "m_admin", "page")
    }
    env = installed.env(
        MERLIN_LOCAL_KAFKA_PORT=str(KAFKA_PORT),
        # A test economy: the checkout's jars, not a second download (the default is ~/.cache/merlin).
        MERLIN_LOCAL_CACHE_DIR=str(PROJECT_ROOT / ".cache"),
        MERLIN_WRITE_API_PORT=str(ports["write"]),
        MERLIN_READ_API_PORT=str(ports["read"]),
        MERLIN_ADMIN_API_PORT=str(ports["admin"]),
        MERLIN_FORWARDER_METRICS_PORT=str(ports["forwarder"]),
        MERLIN_WRITE_API_METRICS_PORT=str(ports["m_write"]),
        MERLIN_READ_API_METRICS_PORT=str(ports["m_read"]),
        MERLIN_ADMIN_API_METRICS_PORT=str(ports["m_admin"]),
        MERLIN_DEV_PAGE_PORT=str(ports["page"]),
    )
    log = installed.home / "merlin-dev.log"
    with _merlin_dev(installed, env, log) as dev:
        ready = [f"http://127.0.0.1:{ports[name]}/readyz" for name in ("write", "read", "forwarder")]
        await eventually(lambda: _all_ready(ready, dev.process, log), 180, "merlin dev's services ready")
        token_file = installed.var_dir / "dev.token"
        hosts = {README_HOSTS[name]: f"127.0.0.1:{ports[name]}" for name in README_HOSTS}
        steps = _readme_session(hosts, token_file)
        # The README reads the token from a checkout's var/: an installed merlin says where its own is.
        assert steps[0][0] in log.read_text()
        answers = _answers([command for command, _ in steps], installed.workdir)
        for (command, expected), answer in zip(steps, answers, strict=True):
            assert _as_the_readme_says(expected, answer), (
                f"{command}\nanswered {answer!r}\nREADME: {expected!r}"
            )
        await _the_live_page_is_served(f"http://127.0.0.1:{ports['page']}", installed.var_dir)

    assert dev.process.returncode == 0, log.read_text()
    assert (dev.kafka_stop, dev.broker_left) == ("kafka: stopped\n", False)
    assert not processes.port_open("127.0.0.1", KAFKA_PORT)
    assert _files(installed.site_packages) == before
    assert list(installed.workdir.iterdir()) == []
    state = installed.var_dir
    assert (state / "merlin.db").is_file()
    assert (state / "kafka" / str(KAFKA_PORT) / "broker.log").is_file()


async def _the_live_page_is_served(url: str, var_dir: Path) -> None:
    """The live-rooms page and its files come from site-packages; bob's token is beside alice's."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for path in ("/", *(f"/assets/{name}" for name in LIVE_PAGE_ASSETS)):
            answer = await client.get(path)
            assert answer.status_code == 200, (path, answer.text)
        config = (await client.get("/config.json")).json()
        assert config["dev_users"] == ["alice", "bob"]
        bob = (await client.post("/dev/tokens/bob")).json()["token"]
    assert bob == (var_dir / "dev-bob.token").read_text().strip()


@dataclass
class _DevRun:
    process: subprocess.Popen[bytes]
    kafka_stop: str = ""  # what `merlin kafka stop` said afterwards
    broker_left: bool = False  # True when that left the broker running (then stopped by its pid file)


@contextmanager
def _merlin_dev(installed: Installed, env: dict[str, str], log: Path) -> Iterator[_DevRun]:
    """``merlin dev`` running; then stopped by SIGINT as by Ctrl-C, and its broker by `merlin kafka stop`."""
    broker = LocalKafka(
        LocalSettings(var_dir=installed.var_dir, cache_dir=PROJECT_ROOT / ".cache"), KAFKA_PORT
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [installed.merlin, "dev"], env=env, cwd=installed.workdir,
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    run = _DevRun(process)
    try:
        yield run
    finally:
        run.process.send_signal(signal.SIGINT)
        try:
            run.process.wait(60)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()
        stopped = subprocess.run(
            [installed.merlin, "kafka", "stop"], env=env, cwd=installed.workdir,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        run.kafka_stop = stopped.stdout + stopped.stderr
        run.broker_left = broker.stop()


async def _all_ready(urls: list[str], dev: subprocess.Popen[bytes], log: Path) -> bool | None:
    if dev.poll() is not None:
        raise AssertionError(f"merlin dev exited {dev.returncode}; its output is in {log}")
    async with httpx.AsyncClient(timeout=2) as client:
        for url in urls:
            try:
                if (await client.get(url)).status_code != 200:
                    return None
            except httpx.TransportError:
                return None
    return True


def _readme_session(hosts: dict[str, str], token_file: Path) -> list[tuple[str, str]]:
    """The commands of the README's first session and the answers it shows, for these hosts and token."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = readme.split("\n## Try it\n", 1)[1].split("```console\n", 1)[1].split("\n```", 1)[0]
    steps: list[tuple[str, list[str]]] = []
    continued = False
    for line in block.splitlines():
        if line.startswith("$ ") or continued:
            if continued:
                steps[-1] = (f"{steps[-1][0]}\n{line}", steps[-1][1])
            else:
                steps.append((line[2:], []))
            continued = line.endswith("\\")
        elif line.strip():
            steps[-1][1].append(line)
    first = steps[0][0]
    assert first == "TOKEN=$(cat var/dev.token)", first
    steps[0] = (f"TOKEN=$(cat {token_file})", [])
    for readme_host in hosts:
        assert any(readme_host in command for command, _ in steps), readme_host
    return [
        (re.sub("|".join(map(re.escape, hosts)), lambda m: hosts[m.group()], command), "\n".join(answer))
        for command, answer in steps
    ]


def _answers(commands: list[str], cwd: Path) -> list[str]:
    """What each command prints, run one after the other in one shell, as typed in a terminal."""
    script = "".join(f"{command}\nprintf '\\n%s\\n' '{MARK}'\n" for command in commands)
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )
    assert done.returncode == 0, done.stderr
    answers = done.stdout.split(f"\n{MARK}\n")
    assert answers[-1] == "", done.stdout
    return [answer.strip() for answer in answers[:-1]]


def _as_the_readme_says(expected: str, answer: str) -> bool:
    """``answer`` is the README's: the same text, or where the README elides with "…", the same JSON.

    An elided answer shows some of the fields (not always in the answer's order): "…" alone in an
    object stands for the fields not shown, at the end of a string for the rest of its value.
    """
    if "…" not in expected:
        return answer == expected
    shown = orjson.loads(expected.replace(",…}", ',"…":"…"}'))
    return _shows(shown, orjson.loads(answer))


def _shows(shown: Any, actual: Any) -> bool:
    if isinstance(shown, dict):
        fields = {name: value for name, value in shown.items() if name != "…"}
        complete = "…" not in shown
        return (
            isinstance(actual, dict)
            and (not complete or fields.keys() == actual.keys())
            and all(name in actual and _shows(value, actual[name]) for name, value in fields.items())
        )
    if isinstance(shown, list):
        return (
            isinstance(actual, list)
            and len(shown) == len(actual)
            and all(_shows(item, got) for item, got in zip(shown, actual, strict=True))
        )
    if isinstance(shown, str) and shown.endswith("…"):
        return isinstance(actual, str) and actual.startswith(shown[:-1])
    return bool(shown == actual)


def _files(folder: Path) -> set[Path]:
    """Every file under ``folder`` but Python's bytecode caches."""
    return {path for path in folder.rglob("*") if "__pycache__" not in path.parts}
