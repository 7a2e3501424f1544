"""The read API: messages, pages of a room, event outcomes and projection lag, from the read store."""

from __future__ import annotations

from fastapi import FastAPI

from kernel.auth import AuthSettings
from kernel.http.app import new_api
from kernel.http.auth import verifier_for
from kernel.http.errors import add_outage_handler
from kernel.http.rate_limit import RateLimitSettings, limiter_for
from kernel.settings import KafkaSettings
from read_api.live_routes import add_live_routes
from read_api.routes import add_routes
from read_api.settings import ReadApiSettings
from read_api.state import ReadApi
from read_store.outages import OUTAGE_ERRORS, is_outage
from read_store.settings import ReadStoreSettings


def create_app(
    settings: ReadApiSettings | None = None,
    store: ReadStoreSettings | None = None,
    kafka: KafkaSettings | None = None,
    auth: AuthSettings | None = None,
    limits: RateLimitSettings | None = None,
) -> FastAPI:
    """The read API's ASGI app; its database engine lives as long as the app runs."""
    api = ReadApi(settings or ReadApiSettings(), store or ReadStoreSettings(), kafka or KafkaSettings())
    app = new_api(
        "read_api",
        "merlin read API",
        "Queries over the read store that the forwarder projects from the event log.",
        lambda _app: api.running(),
        api.registry,
        api.readiness,
        verifier_for(auth or AuthSettings(), "read_api"),
        limiter=limiter_for(limits or RateLimitSettings()),
    )
    app.state.read_api = api
    add_outage_handler(app, OUTAGE_ERRORS, is_outage, "read store")
    add_routes(app)
    add_live_routes(app)
    return app
