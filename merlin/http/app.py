"""What every merlin API is built with: orjson, problem+json errors, metrics, operations routes."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from merlin.http.errors import install_error_handlers
from merlin.http.middleware import BodyLimit, HttpMetrics
from merlin.http.operations import ReadinessCheck, add_operations_routes
from merlin.http.responses import OrjsonResponse

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def new_api(
    service: str,
    title: str,
    description: str,
    lifespan: Lifespan,
    registry: CollectorRegistry,
    readiness: Callable[[FastAPI], ReadinessCheck],
    max_body_bytes: int | None = None,
) -> FastAPI:
    """A FastAPI app with merlin's error handling, metrics and ``/healthz``, ``/readyz``, ``/metrics``."""
    app = FastAPI(
        title=title,
        version="1",
        description=description,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
    )
    install_error_handlers(app)
    if max_body_bytes is not None:
        app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    # Added last, so outermost: it also counts the answers of the body limit.
    app.add_middleware(HttpMetrics, registry=registry, service=service)
    add_operations_routes(app, registry, readiness(app))
    return app
