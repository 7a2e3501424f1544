"""The write API: validates commands and appends their events to Kafka, answering once they are durable."""

from __future__ import annotations

from fastapi import FastAPI

from kernel.auth import AuthSettings
from kernel.http.app import new_api
from kernel.http.auth import verifier_for
from kernel.http.rate_limit import RateLimitSettings, limiter_for
from kernel.settings import KafkaSettings
from write_api.appender import Appender
from write_api.routes import add_routes
from write_api.settings import WriteApiSettings
from write_api.state import WriteApi


def create_app(
    settings: WriteApiSettings | None = None,
    kafka: KafkaSettings | None = None,
    appender: Appender | None = None,
    auth: AuthSettings | None = None,
    limits: RateLimitSettings | None = None,
) -> FastAPI:
    """The write API's ASGI app; its Kafka producer lives as long as the app runs.

    ``appender`` replaces the Kafka appender (benchmarks measure the HTTP stack alone with it).
    """
    settings = settings or WriteApiSettings()
    api = WriteApi(settings, kafka or KafkaSettings(), appender)
    app = new_api(
        "write_api",
        "merlin write API",
        "Appends MessageCreated / MessageUpdated events to the event log.",
        lambda _app: api.running(),
        api.registry,
        api.readiness,
        verifier_for(auth or AuthSettings(), "write_api"),
        limiter=limiter_for(limits or RateLimitSettings()),
        max_body_bytes=settings.max_body_bytes,
        retry_after_seconds=settings.retry_after_seconds,
        cors_origins=settings.cors_origins,
    )
    app.state.write_api = api
    add_routes(app)
    return app
