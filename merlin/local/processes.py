"""Detached server processes tracked by pid files."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if the file exists and holds one."""
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_running(pid: int, marker: str) -> bool:
    """True when ``pid`` is a live (not zombie) process whose command line holds ``marker``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        return False
    # A process caught in the middle of exec shows an empty command line for a moment.
    return not cmdline or marker.encode() in cmdline


def spawn_detached(argv: list[str], log_file: Path, cwd: Path, env: dict[str, str]) -> int:
    """Start ``argv`` in its own session with output to ``log_file``; return its pid.

    posix_spawn leaves no Popen object behind, so the server outlives the
    command that started it without warnings about an unwaited child.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_file), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    old_cwd = Path.cwd()
    os.chdir(cwd)  # posix_spawn has no cwd argument before Python 3.13
    try:
        return os.posix_spawn(argv[0], argv, env, file_actions=file_actions, setsid=True)
    finally:
        os.chdir(old_cwd)


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it leaves no zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int, marker: str, timeout: float) -> None:
    """SIGTERM ``pid`` and wait up to ``timeout`` s for it to end, then SIGKILL it."""
    terminate_all([pid], marker, timeout)


def terminate_all(pids: list[int], marker: str, timeout: float) -> None:
    """SIGTERM every one of ``pids`` at once, wait up to ``timeout`` s for them to end, SIGKILL the rest."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids:
            reap(pid)
        pids = [pid for pid in pids if is_running(pid, marker)]
        if not pids:
            return
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        while is_running(pid, marker):
            reap(pid)
            time.sleep(0.05)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of ``path``, or an empty string."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
