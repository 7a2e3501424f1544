"""A service's operations listener: ``/metrics``, ``/healthz`` and ``/readyz`` on an internal address.

Every service serves one (``MERLIN_<SERVICE>_METRICS_HOST``/``_PORT``, on
127.0.0.1 by default; port 0 turns it off), without authentication: it is for
Prometheus and the process manager, on an address that only they reach. It is a
small aiohttp server on the service's own event loop: a scrape is one short
synchronous collection (a few microseconds per series), no thread of its own
and no lock shared with the service. Answers are JSON; a service that is not
ready answers problem+json 503 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = structlog.get_logger()

Checks = Callable[[], Awaitable[dict[str, bool]]]


def _json(body: object, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=content_type)


@asynccontextmanager
async def serving(
    host: str,
    port: int,
    registry: Callable[[], CollectorRegistry],
    checks: Checks,
    details: Callable[[], dict[str, object]] | None = None,
) -> AsyncIterator[None]:
    """Serve ``/metrics`` (of the registry ``registry()`` gives at each scrape), ``/healthz`` and
    ``/readyz`` (ready when every one of ``checks()`` is; ``details()`` added to the answer) on
    ``host:port`` while the block runs."""

    async def healthz(_request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        try:
            found = await checks()
        except Exception as exc:  # e.g. the service is still starting: not ready, and why
            found, why = {}, f"readiness unknown: {exc}"
        else:
            why = "not answering: " + ", ".join(name for name, ok in found.items() if not ok)
        extra = details() if details is not None else {}
        if found and all(found.values()):
            return _json({"status": "ready", "checks": found, **extra})
        problem = {
            "type": "https://merlin.dev/problems/not-ready",
            "title": "Not ready.",
            "status": 503,
            "detail": why,
            "checks": found,
            **extra,
        }
        response = _json(problem, 503, "application/problem+json")
        response.headers["Retry-After"] = "1"
        return response

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry()))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("operations_listening", host=host, port=port)
    try:
        yield
    finally:
        await runner.cleanup()
