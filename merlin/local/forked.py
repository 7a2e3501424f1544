"""Service processes forked from one that imported merlin once: a start costs a fork, not the imports.

Started as ``python -m merlin.cli <service>``, a service spends 1 to 1.6 s of CPU importing FastAPI,
SQLAlchemy, pydantic and librdkafka's binding before it does anything; a test suite or a benchmark
that starts hundreds of them on two cores spends minutes on that alone. A ``multiprocessing``
fork server imports the services' modules once, then forks a child for each start. The child is
still a process of its own (its own pid, signals, exit code and log) and runs merlin's own
command-line entry point with the environment it is given; only the imports are shared.

Not for a process given ``PROMETHEUS_MULTIPROC_DIR``: ``prometheus_client`` picks its multi-process
mode when it is imported. (A service's own worker processes are fresh interpreters it starts.)
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import types
from multiprocessing.context import ForkServerContext, ForkServerProcess

# What every service imports before it runs: the fork server holds them, its children share them.
_PRELOAD = [
    "merlin.cli", "merlin.services", "merlin.settings_registry", "write_api.app", "read_api.app",
    "admin_api.app", "forwarder.worker",
]  # fmt: skip


def _fork_server() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def _run(argv: list[str], env: dict[str, str], log: str, listening: socket.socket | None) -> None:
    """In the child: the environment, stdin, stdout and stderr a fresh ``merlin`` process would have."""
    os.environ.clear()
    os.environ.update(env)
    sink = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.dup2(sink, 1)
    os.dup2(sink, 2)
    os.close(sink)
    os.close(nothing)
    if listening is not None:
        argv = [*argv, "--fd", str(listening.fileno())]
    from merlin.cli import main  # already imported by the fork server: this costs nothing

    raise SystemExit(main(argv))


class ForkedProcess:
    """A forked service with the part of ``subprocess.Popen``'s interface services are driven by."""

    def __init__(
        self, argv: list[str], env: dict[str, str], log: str, listening: socket.socket | None
    ) -> None:
        self.args = argv
        self._process: ForkServerProcess = _fork_server().Process(
            target=_run, args=(argv, env, log, listening), name=f"merlin {' '.join(argv)}", daemon=False
        )
        # Each child would otherwise import the caller's ``__main__`` first (multiprocessing's spawn
        # preparation): pytest's, say, for nothing. A bare stand-in, for as long as the request is made.
        caller = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            self._process.start()
        finally:
            sys.modules["__main__"] = caller

    @property
    def pid(self) -> int:
        pid = self._process.pid
        assert pid is not None  # started in __init__
        return pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
