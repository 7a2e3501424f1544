"""What every merlin API is built with: orjson, problem+json errors, metrics, operations routes."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from kernel.auth import Verifier
from kernel.http.auth import Authenticate
from kernel.http.errors import install_error_handlers
from kernel.http.middleware import BodyLimit, HttpMetrics
from kernel.http.operations import Operations, ReadinessCheck, add_operations_routes
from kernel.http.rate_limit import RateLimiter
from kernel.http.responses import OrjsonResponse
from kernel.http.strict_json import StrictJsonRoute

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
) -> FastAPI:
    """A FastAPI app with merlin's error handling, metrics and ``/healthz``, ``/readyz``, ``/metrics``.

    ``retry_after_seconds`` is what a 503 for an unavailable event log tells clients to wait.
    Every route but health needs a bearer token that ``verifier`` accepts (or ``operator_token``,
    which holds every scope); without either, authentication is disabled. ``limiter`` bounds
    each subject's requests.
    """
    app = FastAPI(
        title=title,
        version="1",
        description=description,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
    )
    app.router.route_class = StrictJsonRoute
    install_error_handlers(app, retry_after_seconds)
    if max_body_bytes is not None:
        app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(
        Authenticate, verifier=verifier, operator_token=operator_token, admin_only=admin_only, limiter=limiter
    )
    # Added last, so outermost: it also counts the answers of the body limit.
    app.add_middleware(HttpMetrics, registry=registry, service=service)
    add_operations_routes(app, registry, readiness)
    # What the service's metrics listener serves, when it runs one (merlin.services).
    app.state.operations = Operations(registry, readiness)
    return app
