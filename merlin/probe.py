"""``merlin probe [SERVICE]``: is this container's service ready? Its ``/readyz``, asked over loopback.

For health checks, which have no curl in the image: exit 0 when the service answers ready, 1 with
one line saying why otherwise. Without SERVICE, the service is the one process 1 runs (the
container's ``merlin …`` command); a one-shot job such as ``merlin db upgrade`` has nothing to
probe and passes. A health check runs it every few seconds in every container, so it loads the
standard library and one settings class, nothing of the services: ``python -m merlin.probe`` costs
half the CPU of ``merlin probe``, which loads the whole command line first.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROBED = ("write-api", "read-api", "admin-api", "forwarder")
# A container's main process: the command the image's entry point was given.
MAIN_PROCESS = Path("/proc/1/cmdline")
DEFAULT_TIMEOUT = 2.0
# Listening on every address: asked on loopback, which every container has.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class Running:
    """What a ``merlin`` process was told to run."""

    command: str | None  # the subcommand, e.g. ``write-api``; None for ``merlin --help`` and the like
    processes: int | None  # ``--processes N`` (the forwarder's), if given


def running(argv: Sequence[str]) -> Running | None:
    """The ``merlin`` command in ``argv`` (``merlin …``, ``python -m merlin.cli …``, behind an init
    such as ``docker-init -- merlin …``); None when ``argv`` runs something else."""
    for index, word in enumerate(argv):
        if Path(word).name == "merlin":
            return _parsed(argv[index + 1 :])
        if word == "-m" and list(argv[index + 1 : index + 2]) == ["merlin.cli"]:
            return _parsed(argv[index + 2 :])
    return None


def _parsed(arguments: Sequence[str]) -> Running:
    command = next((word for word in arguments if not word.startswith("-")), None)
    processes = None
    for index, word in enumerate(arguments):
        value = None
        if word == "--processes" and index + 1 < len(arguments):
            value = arguments[index + 1]
        elif word.startswith("--processes="):
            value = word.partition("=")[2]
        if value is not None and value.isdigit() and int(value) > 0:
            processes = int(value)
    return Running(command, processes)


def main_process(path: Path | None = None) -> Running | None:
    """What process 1 runs (or the process whose cmdline ``path`` is), if it is ``merlin``; None
    otherwise or when unreadable."""
    try:
        raw = (path or MAIN_PROCESS).read_bytes()
    except OSError:
        return None
    return running([word.decode(errors="replace") for word in raw.split(b"\0") if word])


def addresses(service: str, processes: int | None = None) -> list[tuple[str, int]]:
    """Where ``service`` answers ``/readyz``, by its settings: an API on its own port, the forwarder
    on its operations listener, one per process (``processes``, else ``MERLIN_FORWARDER_PROCESSES``).
    An empty list when the forwarder's listener is off (port 0)."""
    host: str
    if service == "write-api":
        from write_api.settings import WriteApiSettings

        api = WriteApiSettings()
        host, ports = api.host, [api.port]
    elif service == "read-api":
        from read_api.settings import ReadApiSettings

        read = ReadApiSettings()
        host, ports = read.host, [read.port]
    elif service == "admin-api":
        from admin_api.settings import AdminApiSettings

        admin = AdminApiSettings()
        host, ports = admin.host, [admin.port]
    else:
        from forwarder.settings import ForwarderSettings

        forwarder = ForwarderSettings()
        count = processes or forwarder.processes
        host = forwarder.metrics_host
        ports = [forwarder.metrics_port + index for index in range(count)] if forwarder.metrics_port else []
    return [(_LOOPBACK.get(host, host), port) for port in ports]


def ask(host: str, port: int, timeout: float) -> str | None:
    """None when ``http://host:port/readyz`` answers 200; else why not, in a few words."""
    import http.client
    import json

    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/readyz", headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read(65_536)
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except (OSError, http.client.HTTPException) as exc:
        return f"no answer: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
    finally:
        connection.close()
    if response.status == 200:
        return None
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"{response.status} {response.reason}" + (f": {detail}" if detail else "")


def probe(
    service: str | None, timeout: float = DEFAULT_TIMEOUT, main: Running | None = None
) -> tuple[int, str]:
    """The exit status and the one line of ``merlin probe``; ``main`` is what process 1 runs."""
    if service is None:
        if main is None:
            return 1, "merlin probe: process 1 is not merlin: name the service (" + ", ".join(PROBED) + ")"
        if main.command not in PROBED:
            return 0, f"merlin {main.command or ''}".rstrip() + ": nothing to probe (not a service)"
        service = main.command
    from pydantic import ValidationError

    processes = main.processes if main is not None and main.command == service else None
    try:
        found = addresses(service, processes)
    except ValidationError as exc:  # the service would not have started either
        error = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in error["loc"])
        return 1, f"{service}: {exc.title} refused: {field + ': ' if field else ''}{error['msg']}"
    if not found:
        return 1, f"{service}: no /readyz to ask (its operations listener is off: port 0)"
    for host, port in found:
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/readyz"
        why = ask(host, port, timeout)
        if why is not None:
            return 1, f"{service}: not ready ({url}): {why}"
    return 0, f"{service}: ready ({', '.join(f'{host}:{port}' for host, port in found)})"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a number of seconds above 0, not {text!r}")
    return value


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "service", nargs="?", choices=PROBED,
        help="the service to ask (default: the one process 1 runs; a one-shot job passes)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help=f"how long to wait for an answer (default {DEFAULT_TIMEOUT:g})",
    )  # fmt: skip


def _run(options: argparse.Namespace) -> int:
    status, line = probe(options.service, options.timeout, main_process())
    print(line, file=sys.stdout if status == 0 else sys.stderr)
    return status


_DESCRIPTION = (
    "Ask a service's /readyz over loopback, on the port its settings give: exit 0 when it is ready, 1 with"
    " one line saying why otherwise. Without SERVICE, the service process 1 runs (a container's command);"
    " a one-shot job such as `merlin db upgrade` passes."
)


def add_probe_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    probe_parser = commands.add_parser(
        "probe", help="is the service ready? its /readyz, for health checks (exit 0 or 1)",
        description=_DESCRIPTION,
    )  # fmt: skip
    _arguments(probe_parser)
    probe_parser.set_defaults(handler=_run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m merlin.probe``: the same as ``merlin probe``, without loading the whole CLI."""
    parser = argparse.ArgumentParser(prog="merlin probe", description=_DESCRIPTION)
    _arguments(parser)
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
