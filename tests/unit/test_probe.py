"""`merlin probe`, the containers' health check, against real HTTP servers on free loopback ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from merlin.cli import main as merlin
from merlin.probe import Running, main_process, probe, running
from tests import PROJECT_ROOT


class _Readiness(ThreadingHTTPServer):
    """Answers ``/readyz`` with ``status`` and ``body``; counts the requests it had."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.status = 200
        self.body: dict[str, object] = {"status": "ready"}
        self.asked: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: _Readiness

    def do_GET(self) -> None:
        self.server.asked.append(self.path)
        payload = json.dumps(self.server.body).encode()
        self.send_response(self.server.status if self.path == "/readyz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(server: _Readiness) -> Iterator[_Readiness]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def service() -> Iterator[_Readiness]:
    with serving(_Readiness()) as server:
        yield server


@pytest.fixture
def refusing() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@pytest.fixture
def silent() -> Iterator[int]:
    """A port that accepts connections (in the kernel's backlog) and never answers."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        yield listening.getsockname()[1]


def test_a_ready_service_passes_and_is_asked_its_readyz(
    service: _Readiness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The image's setting: listening on every address, asked on loopback.
    monkeypatch.setenv("MERLIN_WRITE_API_HOST", "0.0.0.0")
    monkeypatch.setenv("MERLIN_WRITE_API_PORT", str(service.port))
    status, line = probe("write-api", timeout=2)
    assert (status, line) == (0, f"write-api: ready (127.0.0.1:{service.port})")
    assert service.asked == ["/readyz"]


def test_a_service_answering_503_fails_with_what_it_says(
    service: _Readiness, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.status = 503
    service.body = {"title": "Not ready.", "status": 503, "detail": "not answering: kafka"}
    monkeypatch.setenv("MERLIN_READ_API_PORT", str(service.port))
    status, line = probe("read-api", timeout=2)
    assert status == 1
    assert line == (
        f"read-api: not ready (http://127.0.0.1:{service.port}/readyz): "
        "503 Service Unavailable: not answering: kafka"
    )


def test_nothing_listening_fails_at_once(refusing: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERLIN_ADMIN_API_PORT", str(refusing))
    status, line = probe("admin-api", timeout=2)
    assert status == 1
    assert line == f"admin-api: not ready (http://127.0.0.1:{refusing}/readyz): no answer: Connection refused"


def test_a_service_that_never_answers_fails_after_the_timeout(
    silent: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERLIN_WRITE_API_PORT", str(silent))
    status, line = probe("write-api", timeout=0.2)
    assert (status, line) == (
        1,
        f"write-api: not ready (http://127.0.0.1:{silent}/readyz): no answer within 0.2s",
    )


def _consecutive_servers() -> tuple[_Readiness, _Readiness]:
    """Two servers on consecutive ports, as a forwarder's two processes listen."""
    for _attempt in range(20):
        first = _Readiness()
        try:
            return first, _Readiness(first.port + 1)
        except OSError:
            first.server_close()
    pytest.fail("no two consecutive free ports")


def test_the_forwarder_is_ready_when_each_of_its_processes_is(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = _consecutive_servers()
    with serving(first), serving(second):
        second.status = 503
        second.body = {"detail": "not answering: settings"}
        monkeypatch.setenv("MERLIN_FORWARDER_METRICS_PORT", str(first.port))
        # `merlin forwarder --processes 2` in the container: process i listens on the port + i.
        main = running(
            ["/usr/local/bin/python3.11", "/usr/local/bin/merlin", "forwarder", "--processes", "2"]
        )
        status, line = probe("forwarder", timeout=2, main=main)
        assert status == 1
        assert f"http://127.0.0.1:{second.port}/readyz" in line
        assert line.endswith("503 Service Unavailable: not answering: settings")
        second.status = 200
        assert probe(None, timeout=2, main=main) == (
            0,
            f"forwarder: ready (127.0.0.1:{first.port}, 127.0.0.1:{second.port})",
        )
        assert first.asked == second.asked == ["/readyz", "/readyz"]
        # Told the count by MERLIN_FORWARDER_PROCESSES when process 1 is not that forwarder.
        assert probe("forwarder", timeout=2, main=None)[0] == 0
        assert len(second.asked) == 2
        monkeypatch.setenv("MERLIN_FORWARDER_PROCESSES", "2")
        assert probe("forwarder", timeout=2, main=None)[0] == 0
        assert len(second.asked) == 3


def test_the_forwarder_without_an_operations_listener_cannot_be_probed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MERLIN_FORWARDER_METRICS_PORT", "0")
    status, line = probe("forwarder", timeout=2)
    assert status == 1
    assert "port 0" in line


def test_settings_the_service_would_refuse_fail_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERLIN_READ_API_PORT", "eighty")
    status, line = probe("read-api", timeout=2)
    assert status == 1
    assert line.startswith("read-api: ReadApiSettings refused: port: ")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/local/bin/python3.11", "/usr/local/bin/merlin", "write-api"], Running("write-api", None)),
        (["/sbin/docker-init", "--", "merlin", "forwarder", "--processes=3"], Running("forwarder", 3)),
        (["python", "-m", "merlin.cli", "admin-api", "--workers", "2"], Running("admin-api", None)),
        (["/usr/local/bin/python3.11", "/usr/local/bin/merlin", "db", "upgrade"], Running("db", None)),
        (["/usr/local/bin/python3.11", "/usr/local/bin/merlin", "--help"], Running(None, None)),
        (["/bin/sh", "-c", "sleep 1"], None),
        ([], None),
    ],
)
def test_what_process_1_runs_is_read_from_its_arguments(argv: list[str], expected: Running | None) -> None:
    assert running(argv) == expected


def test_the_main_process_is_read_from_its_nul_separated_cmdline(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/usr/local/bin/python3.11\0/usr/local/bin/merlin\0read-api\0")
    assert main_process(cmdline) == Running("read-api", None)
    assert main_process(tmp_path / "missing") is None


def test_without_a_service_a_one_shot_job_passes_and_a_stranger_fails(
    service: _Readiness, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert probe(None, main=Running("db", None)) == (0, "merlin db: nothing to probe (not a service)")
    assert probe(None, main=Running(None, None))[0] == 0
    status, line = probe(None, main=None)
    assert status == 1
    assert "name the service" in line
    monkeypatch.setenv("MERLIN_READ_API_PORT", str(service.port))
    assert probe(None, timeout=2, main=Running("read-api", None))[0] == 0
    assert service.asked == ["/readyz"]


def _probe_command(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "merlin.probe", *arguments],
        capture_output=True, text=True, check=False, timeout=60, cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env},
    )  # fmt: skip


def test_the_module_exits_0_or_1_with_one_line(service: _Readiness, refusing: int) -> None:
    ready = _probe_command("write-api", env={"MERLIN_WRITE_API_PORT": str(service.port)})
    assert (ready.returncode, ready.stdout, ready.stderr) == (
        0,
        f"write-api: ready (127.0.0.1:{service.port})\n",
        "",
    )
    down = _probe_command("--timeout", "1", "write-api", env={"MERLIN_WRITE_API_PORT": str(refusing)})
    assert down.returncode == 1
    assert down.stdout == ""
    assert down.stderr.count("\n") == 1
    assert "Connection refused" in down.stderr


def test_merlin_probe_is_the_same_command(
    service: _Readiness, refusing: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MERLIN_ADMIN_API_PORT", str(service.port))
    assert merlin(["probe", "admin-api"]) == 0
    assert capsys.readouterr().out == f"admin-api: ready (127.0.0.1:{service.port})\n"
    monkeypatch.setenv("MERLIN_ADMIN_API_PORT", str(refusing))
    assert merlin(["probe", "--timeout", "1", "admin-api"]) == 1
    assert "admin-api: not ready" in capsys.readouterr().err


_HEAVY = (
    "merlin.cli", "merlin.services", "uvicorn", "fastapi", "starlette", "sqlalchemy", "aiohttp", "httpx",
    "confluent_kafka", "structlog", "kernel.http", "forwarder.worker", "write_api.app", "read_api.app",
)  # fmt: skip


def test_the_probe_loads_nothing_of_the_services(refusing: int) -> None:
    ports = {"MERLIN_WRITE_API_PORT": str(refusing), "MERLIN_FORWARDER_METRICS_PORT": str(refusing)}
    check = (
        "import sys; from merlin.probe import probe;"
        f" probe('write-api', 1); probe('forwarder', 1);"
        f" print(' '.join(m for m in {_HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **ports},
    )  # fmt: skip
    assert done.stdout.split() == []
    # and the check can see a service's module loaded
    loaded = subprocess.run(
        [sys.executable, "-c", check.replace("import sys;", "import sys, merlin.cli;")],
        capture_output=True, text=True, check=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **ports},
    )  # fmt: skip
    assert "merlin.cli" in loaded.stdout.split()
