"""The write API: validates commands and appends their events to Kafka, answering once they are durable."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import FastAPI, Header, Request
from prometheus_client import CollectorRegistry, Histogram
from starlette.responses import Response

from domain import (
    CreateMessage,
    Event,
    InvalidCommand,
    UpdateMessage,
    create_event_id,
    message_id_for,
    to_event,
    update_event_id,
)
from merlin.http.app import new_api
from merlin.http.operations import ReadinessCheck
from merlin.http.params import RoomId
from merlin.http.responses import OrjsonResponse, problem_responses
from merlin.position import Position
from merlin.producer import AsyncProducer
from merlin.settings import KafkaSettings
from write_api.appender import Appender, EventAppender, producer_config
from write_api.models import Accepted, CreateMessageRequest, UpdateAccepted, UpdateMessageRequest
from write_api.settings import WriteApiSettings

_IF_MATCH = re.compile(r'(?:W/)?"?(\d{1,9})"?')
_MAX_KEY = 255

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Retries with the same key make one message."),
]
Traceparent = Annotated[str | None, Header(include_in_schema=False)]


def _key(key: str | None) -> str | None:
    if key is not None and not 1 <= len(key) <= _MAX_KEY:
        raise InvalidCommand("Idempotency-Key", f"must be 1 to {_MAX_KEY} characters")
    return key


def _if_match(value: str | None, expected: int | None) -> int | None:
    if value is None:
        return expected
    match = _IF_MATCH.fullmatch(value.strip())
    if match is None or int(match.group(1)) < 1:
        raise InvalidCommand("If-Match", 'must be a version, e.g. "3"')
    version = int(match.group(1))
    if expected is not None and expected != version:
        raise InvalidCommand("If-Match", "disagrees with expected_version in the body")
    return version


def create_app(
    settings: WriteApiSettings | None = None,
    kafka: KafkaSettings | None = None,
    appender: Appender | None = None,
) -> FastAPI:
    """The write API's ASGI app; its Kafka producer lives as long as the app runs.

    ``appender`` replaces the Kafka appender (benchmarks measure the HTTP stack alone with it).
    """
    settings = settings or WriteApiSettings()
    kafka = kafka or KafkaSettings()
    registry = CollectorRegistry()
    append_latency = Histogram(
        "merlin_write_append_seconds",
        "Time from produce to broker acknowledgement",
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if appender is not None:
            app.state.appender = appender
            yield
            return
        config = kafka.client(
            producer_config(settings.linger_ms, settings.delivery_timeout_ms, settings.queue_max_messages)
        )
        producer = AsyncProducer(config)
        app.state.appender = EventAppender(producer, kafka.events_topic)
        try:
            yield
        finally:
            await producer.close()

    def readiness(app: FastAPI) -> ReadinessCheck:
        async def check() -> dict[str, bool]:
            return {"kafka": await app.state.appender.ready()}

        return check

    app = new_api(
        "write_api",
        "merlin write API",
        "Appends MessageCreated / MessageUpdated events to the event log.",
        lifespan,
        registry,
        readiness,
        max_body_bytes=settings.max_body_bytes,
    )
    app.state.retry_after_seconds = settings.retry_after_seconds

    async def append(request: Request, event: Event, traceparent: str | None) -> Position:
        with append_latency.time():
            position: Position = await request.app.state.appender.append(event, traceparent)
        return position

    @app.post(
        "/v1/rooms/{room_id}/messages",
        status_code=202,
        response_model=Accepted,
        summary="Post a message",
        responses=problem_responses(400, 413, 422, 503),
    )
    async def post_message(
        request: Request,
        room_id: RoomId,
        command: CreateMessageRequest,
        idempotency_key: IdempotencyKey = None,
        traceparent: Traceparent = None,
    ) -> Response:
        key = _key(idempotency_key)
        message_id = command.message_id
        if key is not None:
            keyed = message_id_for(room_id, key)
            if message_id is not None and message_id != keyed:
                raise InvalidCommand("message_id", "disagrees with the Idempotency-Key")
            message_id = keyed
        message_id = message_id or uuid.uuid4()
        event_id = create_event_id(room_id, message_id, command.sender_id, command.body)
        create = CreateMessage(
            event_id, room_id, message_id, command.sender_id, command.body, datetime.now(UTC)
        )
        position = await append(request, to_event(create), traceparent)
        return OrjsonResponse(
            {"message_id": str(message_id), "event_id": str(event_id), "position": str(position)},
            status_code=202,
        )

    @app.patch(
        "/v1/rooms/{room_id}/messages/{message_id}",
        status_code=202,
        response_model=UpdateAccepted,
        summary="Edit a message",
        responses=problem_responses(400, 413, 422, 503),
    )
    async def patch_message(
        request: Request,
        room_id: RoomId,
        message_id: UUID,
        command: UpdateMessageRequest,
        idempotency_key: IdempotencyKey = None,
        if_match: Annotated[str | None, Header(alias="If-Match")] = None,
        traceparent: Traceparent = None,
    ) -> Response:
        key = _key(idempotency_key)
        expected = _if_match(if_match, command.expected_version)
        event_id = update_event_id(room_id, message_id, key) if key else uuid.uuid4()
        update = UpdateMessage(
            event_id, room_id, message_id, command.sender_id, command.body, datetime.now(UTC), expected
        )
        position = await append(request, to_event(update), traceparent)
        return OrjsonResponse({"event_id": str(event_id), "position": str(position)}, status_code=202)

    return app
