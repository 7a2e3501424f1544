"""Entry points of merlin's services: build from settings, run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Listener:
    """Where an API's metrics listener answers (port 0: it does not run)."""

    host: str
    port: int
    env: str  # the variable that sets the port, which the parent of workers sets to 0 for each


def _serve_http(
    build: Callable[[], object],
    host: str,
    port: int,
    service: str,
    workers: int = 1,
    fd: int | None = None,
    listener: _Listener | None = None,
) -> None:
    """Serve the app ``build`` makes on ``host:port``; with ``workers`` > 1, that many processes on one
    socket; with ``fd``, on the listening socket a parent passed down. ``listener`` serves the
    metrics, ``/healthz`` and ``/readyz`` on an address of its own, on the same event loop."""
    start_observing(service)  # first: building the app may log (e.g. authentication disabled)
    if workers > 1 and fd is None:
        _http_workers(host, port, service, workers, listener)
        return
    import uvicorn

    from kernel.http.edge import guarded_protocol
    from kernel.http.edge_settings import EdgeSettings

    app = build()
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
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
    server = uvicorn.Server(config)
    sockets = None if fd is None else [socket.socket(fileno=fd)]

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as operations:
            if listener is not None and listener.port:
                from kernel.operations_listener import serving

                state = app.state.operations  # type: ignore[attr-defined]
                registry = state.registry
                await operations.enter_async_context(
                    serving(listener.host, listener.port, lambda: registry, state.readiness)
                )
            await server.serve(sockets=sockets)

    settle_heap()
    # What uvicorn.Server.run does, with the listener beside the server on its loop.
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())


def _http_workers(host: str, port: int, service: str, workers: int, listener: _Listener | None) -> None:
    """``workers`` processes of ``service`` accepting on one socket bound here, under one parent.

    The kernel hands each new connection to one of them. Their Prometheus metrics are kept in
    files of one folder (prometheus_client's multiprocess mode), so ``/metrics`` of any worker
    answers for all of them. The metrics listener is this parent's, not a worker's: it answers
    for all of them while any restarts, and nothing but the parent has to know which one serves it.
    """
    listening = socket.create_server((host, port), backlog=2048)
    listening.set_inheritable(True)
    metrics = tempfile.mkdtemp(prefix=f"merlin-{service}-metrics-")
    command = service.replace("_", "-")

    def child(index: int) -> Child:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics}
        if listener is not None:
            env[listener.env] = "0"
        argv = [sys.executable, "-m", "merlin.cli", command, "--fd", str(listening.fileno())]
        return Child(f"{command}-{index}", argv, env, pass_fds=(listening.fileno(),))

    children = [child(index) for index in range(workers)]
    serving = None
    if listener is not None and listener.port:
        from merlin.worker_metrics import serving_workers

        serving = serving_workers(listener.host, listener.port, children, metrics)
    log.info("http_workers_starting", service=service, workers=workers, host=host, port=port)
    try:
        run_group(children, BackoffPolicy(), grace=15.0, serving=serving)
    finally:
        listening.close()
        shutil.rmtree(metrics, ignore_errors=True)


def run_write_api(workers: int | None = None, fd: int | None = None) -> None:
    """Serve the write API until stopped."""
    from write_api.app import create_app

    settings = WriteApiSettings()
    build = partial(create_app, settings)
    listener = _Listener(settings.metrics_host, settings.metrics_port, "MERLIN_WRITE_API_METRICS_PORT")
    _serve_http(build, settings.host, settings.port, "write_api", workers or settings.workers, fd, listener)


def run_read_api(workers: int | None = None, fd: int | None = None) -> None:
    """Serve the read API until stopped."""
    from read_api.app import create_app

    settings = ReadApiSettings()
    build = partial(create_app, settings)
    listener = _Listener(settings.metrics_host, settings.metrics_port, "MERLIN_READ_API_METRICS_PORT")
    _serve_http(build, settings.host, settings.port, "read_api", workers or settings.workers, fd, listener)


def run_admin_api(workers: int | None = None, fd: int | None = None) -> None:
    """Serve the admin API until stopped."""
    from admin_api.app import create_app

    settings = AdminApiSettings()
    build = partial(create_app, settings)
    listener = _Listener(settings.metrics_host, settings.metrics_port, "MERLIN_ADMIN_API_METRICS_PORT")
    _serve_http(build, settings.host, settings.port, "admin_api", workers or settings.workers, fd, listener)


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
