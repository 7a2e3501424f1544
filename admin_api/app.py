"""The admin API: operators' controls over the endpoints, every call but health behind a bearer token."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from admin_api.routes import add_routes
from admin_api.settings import AdminApiSettings
from admin_api.state import AdminApi
from kernel.auth import AuthSettings, Verifier
from kernel.errors import InfrastructureError
from kernel.http.app import new_api
from kernel.http.openapi import amend
from kernel.http.responses import problem
from kernel.settings import KafkaSettings
from webhooks.payload_schemas import openapi_webhooks
from webhooks.settings import EndpointsSettings


async def _unavailable(_request: Request, exc: Exception) -> Response:
    return problem(503, "unavailable", "Kafka did not answer; nothing was changed.", str(exc),
                   headers={"Retry-After": "1"})  # fmt: skip


def create_app(
    settings: AdminApiSettings | None = None,
    kafka: KafkaSettings | None = None,
    auth: AuthSettings | None = None,
    endpoints: EndpointsSettings | None = None,
) -> FastAPI:
    """The admin API's ASGI app; refuses to exist without a token.

    Callers hold the admin scope with ``MERLIN_ADMIN_TOKEN``, or with a JWT whose scope has
    ``admin`` where the APIs verify JWTs (never unauthenticated, even with authentication disabled).
    """
    settings = settings or AdminApiSettings()
    auth = auth or AuthSettings()
    if settings.token is None:
        raise InfrastructureError("MERLIN_ADMIN_TOKEN is not set: the admin API does not run without a token")
    api = AdminApi(settings, kafka or KafkaSettings(), endpoints or EndpointsSettings())
    app = new_api(
        "admin_api",
        "merlin admin API",
        "Operators' controls over the forwarder's endpoints.",
        lambda _app: api.running(),
        api.registry,
        api.readiness,
        Verifier(auth) if auth.verifies else None,
        operator_token=settings.token.get_secret_value(),
        admin_only=True,
    )
    app.state.admin_api = api
    app.add_exception_handler(InfrastructureError, _unavailable)
    add_routes(app)
    # Endpoints are defined here, so what they are sent is described here too.
    amend(app, _with_webhooks)
    return app


def _with_webhooks(document: dict[str, Any]) -> None:
    webhooks, schemas = openapi_webhooks()
    document["webhooks"] = webhooks
    document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
