"""The admin API: operators' controls over the endpoints, every call but health behind a bearer token."""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from admin_api.routes import add_routes
from admin_api.settings import AdminApiSettings
from admin_api.state import AdminApi
from kernel.errors import InfrastructureError
from kernel.http.app import new_api
from kernel.http.responses import problem
from kernel.settings import KafkaSettings

_OPEN = frozenset({"/healthz", "/readyz"})


class BearerToken:
    """Refuses with 401 every request but health that lacks ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in _OPEN:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = problem(
                    401, "unauthorized", "A valid bearer token is required.",
                    headers={"WWW-Authenticate": 'Bearer realm="merlin-admin"'},
                )  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _unavailable(_request: Request, exc: Exception) -> Response:
    return problem(503, "unavailable", "Kafka did not answer; nothing was changed.", str(exc),
                   headers={"Retry-After": "1"})  # fmt: skip


def create_app(settings: AdminApiSettings | None = None, kafka: KafkaSettings | None = None) -> FastAPI:
    """The admin API's ASGI app; refuses to exist without a token."""
    settings = settings or AdminApiSettings()
    if settings.token is None:
        raise InfrastructureError("MERLIN_ADMIN_TOKEN is not set: the admin API does not run without a token")
    api = AdminApi(settings, kafka or KafkaSettings())
    app = new_api(
        "admin_api",
        "merlin admin API",
        "Operators' controls over the forwarder's endpoints.",
        lambda _app: api.running(),
        api.registry,
        api.readiness,
    )
    app.state.admin_api = api
    app.add_exception_handler(InfrastructureError, _unavailable)
    add_routes(app)
    app.add_middleware(BearerToken, token=settings.token.get_secret_value())
    return app
