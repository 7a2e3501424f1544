"""Entry points of merlin's services: build from settings, run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from functools import partial

import structlog

from admin_api.settings import AdminApiSettings
from domain.errors import MerlinError
from forwarder.settings import ForwarderSettings
from forwarder.supervisor import BackoffPolicy, SupervisorGaveUp
from kernel.logs import start_observing
from merlin.heap import settle_heap
from merlin.process_group import Child, run_group
from read_api.settings import ReadApiSettings
from read_store.settings import ReadStoreSettings
from write_api.settings import WriteApiSettings

# The apps, the forwarder, uvicorn and the migrations are imported by the function that runs
# them: a parent of worker processes imports none of them, and each process only its own.

log = structlog.get_logger()


def _serve_http(
    build: Callable[[], object], host: str, port: int, service: str, workers: int = 1, fd: int | None = None
) -> None:
    """Serve the app ``build`` makes on ``host:port``; with ``workers`` > 1, that many processes on one
    socket; with ``fd``, on the listening socket a parent passed down."""
    start_observing(service)  # first: building the app may log (e.g. authentication disabled)
    if workers > 1 and fd is None:
        _http_workers(host, port, service, workers)
        return
    import uvicorn

    from kernel.http.edge import EdgeSettings, guarded_protocol

    config = uvicorn.Config(
        build(),  # type: ignore[arg-type]
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        # Longer than the idle timeouts of common client pools (Go's 90 s aside), so a client
        # seldom sends a request on a connection the server is closing: a POST that meets
        # such a reset is not retried by the client. uvicorn's default is 5 s.
        timeout_keep_alive=75,
        # Limits and deadlines on every connection, before any app code (kernel.http.edge).
        http=guarded_protocol(EdgeSettings()),
    )
    settle_heap()
    uvicorn.Server(config).run(sockets=None if fd is None else [socket.socket(fileno=fd)])


def _http_workers(host: str, port: int, service: str, workers: int) -> None:
    """``workers`` processes of ``service`` accepting on one socket bound here, under one parent.

    The kernel hands each new connection to one of them. Their Prometheus metrics are kept in
    files of one folder (prometheus_client's multiprocess mode), so ``/metrics`` of any worker
    answers for all of them.
    """
    listening = socket.create_server((host, port), backlog=2048)
    listening.set_inheritable(True)
    metrics = tempfile.mkdtemp(prefix=f"merlin-{service}-metrics-")
    command = service.replace("_", "-")

    def child(index: int) -> Child:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics}
        argv = [sys.executable, "-m", "merlin.cli", command, "--fd", str(listening.fileno())]
        return Child(f"{command}-{index}", argv, env, pass_fds=(listening.fileno(),))

    log.info("http_workers_starting", service=service, workers=workers, host=host, port=port)
    try:
        run_group([child(index) for index in range(workers)], BackoffPolicy(), grace=15.0)
    finally:
        listening.close()
        shutil.rmtree(metrics, ignore_errors=True)


def run_write_api(workers: int | None = None, fd: int | None = None) -> None:
    """Serve the write API until stopped."""
    from write_api.app import create_app

    settings = WriteApiSettings()
    build = partial(create_app, settings)
    _serve_http(build, settings.host, settings.port, "write_api", workers or settings.workers, fd)


def run_read_api(workers: int | None = None, fd: int | None = None) -> None:
    """Serve the read API until stopped."""
    from read_api.app import create_app

    settings = ReadApiSettings()
    build = partial(create_app, settings)
    _serve_http(build, settings.host, settings.port, "read_api", workers or settings.workers, fd)


def run_admin_api(workers: int | None = None, fd: int | None = None) -> None:
    """Serve the admin API until stopped."""
    from admin_api.app import create_app

    settings = AdminApiSettings()
    build = partial(create_app, settings)
    _serve_http(build, settings.host, settings.port, "admin_api", workers or settings.workers, fd)


def run_forwarder(processes: int | None = None) -> None:
    """Run the forwarder worker until SIGTERM or SIGINT; the current batch finishes first.

    With more than one process (``processes``, else ``MERLIN_FORWARDER_PROCESSES``), a parent
    runs that many workers, members of the same consumer groups, and restarts one that exits.
    """
    start_observing("forwarder")
    settings = ForwarderSettings()
    count = processes or settings.processes
    if count > 1:
        _forwarder_processes(settings, count)
        return
    import uvloop

    from forwarder.worker import Forwarder
    from kernel.settings import KafkaSettings

    forwarder = Forwarder(settings, KafkaSettings(), ReadStoreSettings())
    settle_heap()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("forwarder_starting", group=settings.group_id, endpoints=len(forwarder.endpoints))
        await forwarder.run(stop)
        log.info("forwarder_stopped")

    try:
        # uvloop, as uvicorn uses for the APIs: less CPU per delivery and per callback.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except SupervisorGaveUp as exc:
        log.critical("forwarder_gave_up", reason=str(exc))
        raise SystemExit(1) from exc


def _forwarder_processes(settings: ForwarderSettings, count: int) -> None:
    """``count`` forwarder processes under one parent (``merlin.process_group``)."""
    if settings.metrics_port and settings.metrics_port + count - 1 > 65_535:
        raise MerlinError(
            f"MERLIN_FORWARDER_METRICS_PORT + {count - 1} is past 65535: no port for each process"
        )
    if settings.migrate_on_start:  # once, here: children migrating at once would race
        from read_store.migrate import upgrade

        store = ReadStoreSettings()
        asyncio.run(upgrade(store.url, store.db_schema))

    def child(index: int) -> Child:
        env = {**os.environ, "MERLIN_FORWARDER_PROCESSES": "1", "MERLIN_FORWARDER_MIGRATE_ON_START": "false"}
        if settings.metrics_port:  # process i serves /metrics, /healthz and /readyz on port + i
            env["MERLIN_FORWARDER_METRICS_PORT"] = str(settings.metrics_port + index)
        if settings.instance_id:  # static members need an id each
            env["MERLIN_FORWARDER_INSTANCE_ID"] = f"{settings.instance_id}-{index}"
        return Child(f"forwarder-{index}", [sys.executable, "-m", "merlin.cli", "forwarder"], env)

    log.info("forwarder_processes_starting", processes=count, group=settings.group_id)
    try:
        run_group([child(index) for index in range(count)], settings.restart_policy(settings.max_restarts))
    except SupervisorGaveUp as exc:
        log.critical("forwarder_gave_up", reason=str(exc))
        raise SystemExit(1) from exc
