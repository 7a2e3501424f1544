"""Services forked from the fork server: their own environment, output, socket, signals and exit code."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from kernel.settings import KafkaSettings
from merlin.local.forked import ForkedProcess
from merlin.local.service_processes import Services


def _env(**settings: str) -> dict[str, str]:
    return {"MERLIN_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "MERLIN_AUTH_DISABLED": "true", **settings}


def test_a_child_runs_with_the_environment_it_is_given_and_not_its_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERLIN_WRITE_API_MAX_BODY_BYTES", "12")  # the caller's: would be refused
    log = tmp_path / "write-api.log"
    child = ForkedProcess(["write-api"], _env(MERLIN_WRITE_API_PORT="not-a-port"), str(log), None)
    assert child.wait(60) == 2
    assert child.returncode == 2
    assert log.read_text().splitlines() == [
        "merlin: error: MERLIN_WRITE_API_PORT: Input should be a valid integer, "
        "unable to parse string as an integer (got 'not-a-port')"
    ]


def test_a_child_serves_on_the_socket_it_is_handed_and_dies_of_the_signal_it_is_sent(tmp_path: Path) -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    env = _env(MERLIN_WRITE_API_PORT=str(port))
    child = ForkedProcess(["write-api"], env, str(tmp_path / "log"), listening)
    listening.close()  # the child holds its own copy
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(0.1)
        assert child.poll() is None
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                break
            except httpx.TransportError:
                assert child.poll() is None, (tmp_path / "log").read_text()
                assert time.monotonic() < deadline, "the forked write API never answered"
                time.sleep(0.05)
    finally:
        child.kill()
    assert child.wait(10) == -signal.SIGKILL


def test_a_service_started_where_an_earlier_one_logged_shows_only_its_own_lines(tmp_path: Path) -> None:
    services = Services(KafkaSettings(bootstrap_servers="127.0.0.1:1"), "sqlite://", tmp_path, forked=True)
    (tmp_path / "write-api-0.log").write_text("an earlier service's line\n")
    service = services._spawn("write-api", {**_env(), "MERLIN_WRITE_API_PORT": "not-a-port"})
    assert service.process.wait(60) == 2
    assert "an earlier service's line" not in service.output()
    assert "MERLIN_WRITE_API_PORT" in service.output()
