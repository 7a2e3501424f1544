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
from read_api.tickets import Tickets
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
    settings = settings or ReadApiSettings()
    auth = auth or AuthSettings()
    api = ReadApi(settings, store or ReadStoreSettings(), kafka or KafkaSettings())
    tickets = Tickets.keyed(settings.live_ticket_key, auth.jwt_secret, settings.live_ticket_seconds)
    api.live.tickets = tickets
    tickets.presented = lambda outcome: api.live.metrics.tickets.labels(outcome).inc()
    app = new_api(
        "read_api",
        "merlin read API",
        "Queries over the read store that the forwarder projects from the event log.",
        lambda _app: api.running(),
        api.registry,
        api.readiness,
        verifier_for(auth, "read_api"),
        limiter=limiter_for(limits or RateLimitSettings()),
        tickets=tickets.caller,
    )
    app.state.read_api = api
    add_outage_handler(app, OUTAGE_ERRORS, is_outage, "read store")
    add_routes(app)
    add_live_routes(app)
    return app
