"""What every merlin API is built with: orjson, problem+json errors, metrics, operations routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import Scope

from kernel import tracing
from kernel.auth import Caller, Verifier
from kernel.http.auth import Authenticate
from kernel.http.errors import count_unavailable, install_error_handlers
from kernel.http.explorer import add_explorer
from kernel.http.middleware import BodyLimit, HttpMetrics, RequestLog
from kernel.http.openapi import Edge, describe, package_version
from kernel.http.operations import Operations, ReadinessCheck, add_operations_routes
from kernel.http.rate_limit import RateLimiter
from kernel.http.responses import OrjsonResponse
from kernel.http.strict_json import StrictJsonRoute
from kernel.settings import LoggingSettings

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def new_api(
    service: str,
    title: str,
    description: str,
    lifespan: Lifespan,
    registry: CollectorRegistry,
    readiness: ReadinessCheck,
    verifier: Verifier | None,
    max_body_bytes: int | None = None,
    retry_after_seconds: int = 1,
    operator_token: str | None = None,
    admin_only: bool = False,
    limiter: RateLimiter | None = None,
    logging: LoggingSettings | None = None,
    tickets: Callable[[Scope], Caller | None] | None = None,
) -> FastAPI:
    """A FastAPI app with merlin's error handling, metrics, ``/healthz``, ``/readyz``, ``/metrics`` and
    the API explorer at ``/docs`` (``kernel.http.explorer``).

    ``retry_after_seconds`` is what a 503 for an unavailable event log tells clients to wait.
    Every route but health needs a bearer token that ``verifier`` accepts (or ``operator_token``,
    which holds every scope); without either, authentication is disabled. ``limiter`` bounds
    each subject's requests. Every request gets an id (``X-Request-Id``) and, unless ``logging``
    (``MERLIN_LOG_*``) turns it off, an access log line. With tracing on (``kernel.tracing``),
    each request is a server span (OpenTelemetry's FastAPI instrumentation).
    """
    app = FastAPI(
        title=title,
        version=package_version(),
        description=description,
        lifespan=_flushing_traces(lifespan) if tracing.ENABLED else lifespan,
        default_response_class=OrjsonResponse,
        # FastAPI's own OpenTelemetry (in 0.165) stays off: server spans come from the
        # instrumentation below when tracing is on, metrics from Prometheus. Off, it also saves
        # FastAPI asking for three global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # FastAPI's pages load Swagger UI and ReDoc from a CDN; merlin's explorer serves its own.
        docs_url=None,
        redoc_url=None,
    )
    app.router.route_class = StrictJsonRoute
    install_error_handlers(app, retry_after_seconds)
    count_unavailable(app, registry, service)
    if max_body_bytes is not None:
        app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(
        Authenticate,
        verifier=verifier,
        operator_token=operator_token,
        admin_only=admin_only,
        limiter=limiter,
        tickets=tickets,
    )
    # Added last, so outermost: it also counts the answers of the body limit.
    app.add_middleware(HttpMetrics, registry=registry, service=service)
    # Outside the metrics, so its id is bound for every log line of the request.
    app.add_middleware(RequestLog, access=(logging or LoggingSettings()).access)
    add_operations_routes(app, registry, readiness, service)
    describe(
        app,
        Edge(
            operator_token=operator_token is not None,
            rate_limited=limiter is not None,
            body_limit=max_body_bytes is not None,
        ),
    )
    add_explorer(app)
    # What the service's metrics listener serves, when it runs one (merlin.services).
    app.state.operations = Operations(registry, readiness)
    if tracing.ENABLED:
        _instrument(app)
    return app


def _instrument(app: FastAPI) -> None:
    """A server span per request, outermost (it wraps the error handling too), continuing a valid
    incoming ``traceparent``; none for health and metrics; no span per ASGI message."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls="/healthz$,/readyz$,/metrics$",
        exclude_spans=["receive", "send"],
        tracer_provider=tracing.provider(),
    )


def _flushing_traces(lifespan: Lifespan) -> Lifespan:
    """``lifespan``, then the spans finished so far exported as the app stops."""

    @asynccontextmanager
    async def flushing(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with lifespan(app):
                yield
        finally:
            await asyncio.to_thread(tracing.flush)

    return flushing
