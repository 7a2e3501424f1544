"""The read API: messages, pages of a room, event outcomes and projection lag, from the read store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from fastapi import FastAPI, Query, Request
from prometheus_client import CollectorRegistry
from starlette.responses import Response

from domain.errors import InvalidCommand
from merlin.http.app import new_api
from merlin.http.operations import ReadinessCheck
from merlin.http.params import AfterPosition, RoomId
from merlin.http.responses import OrjsonResponse, problem, problem_responses
from merlin.position import Position
from merlin.settings import KafkaSettings
from read_api.database import create_engine
from read_api.queries import ReadStore
from read_api.settings import ReadApiSettings, ReadStoreSettings

# seq is a 64-bit column: larger values are refused rather than overflow the driver.
_MAX_SEQ = 2**63 - 1


def create_app(
    settings: ReadApiSettings | None = None,
    store: ReadStoreSettings | None = None,
    kafka: KafkaSettings | None = None,
) -> FastAPI:
    """The read API's ASGI app; its database engine lives as long as the app runs."""
    settings = settings or ReadApiSettings()
    store = store or ReadStoreSettings()
    kafka = kafka or KafkaSettings()
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(store.url, schema=store.db_schema)
        app.state.reads = ReadStore(engine, kafka.events_topic)
        app.state.admin = AdminClient(kafka.client())
        try:
            yield
        finally:
            await app.state.reads.close()

    def readiness(app: FastAPI) -> ReadinessCheck:
        async def check() -> dict[str, bool]:
            reads: ReadStore = app.state.reads
            try:
                await reads.ping()
            except Exception:  # any failure to reach the store means not ready
                return {"read_store": False}
            return {"read_store": True}

        return check

    app = new_api(
        "read_api",
        "merlin read API",
        "Queries over the read store that the forwarder projects from the event log.",
        lifespan,
        registry,
        readiness,
    )

    async def caught_up(request: Request, after_position: str | None) -> Response | None:
        """None when the read may go ahead; a problem when the projection is still behind."""
        if after_position is None:
            return None
        position = Position.parse(after_position)
        reads: ReadStore = request.app.state.reads
        if await reads.wait_for(position, settings.position_wait_seconds):
            return None
        ends = await _end_offsets(request.app.state.admin, kafka.events_topic)
        if ends is not None and position.offset >= ends.get(position.partition, 0):
            # Not lag: no write ever got this position.
            raise InvalidCommand("after_position", "is beyond the end of the event log")
        return problem(
            503,
            "projection-behind",
            "The projection has not reached that position yet.",
            f"waited {settings.position_wait_seconds:g} s for position {position}; retry shortly",
            headers={"Retry-After": "1"},
            position=str(position),
        )

    @app.get(
        "/v1/rooms/{room_id}/messages/{message_id}",
        summary="One message",
        responses=problem_responses(404, 422, 503),
    )
    async def get_message(
        request: Request, room_id: RoomId, message_id: UUID, after_position: AfterPosition = None
    ) -> Response:
        if (behind := await caught_up(request, after_position)) is not None:
            return behind
        message = await request.app.state.reads.message(room_id, str(message_id))
        if message is None:
            return problem(404, "not-found", "No such message.", f"room {room_id}, message {message_id}")
        return OrjsonResponse(message)

    @app.get(
        "/v1/rooms/{room_id}/messages",
        summary="A room's messages in seq order",
        responses=problem_responses(422, 503),
    )
    async def list_messages(
        request: Request,
        room_id: RoomId,
        after_seq: Annotated[int | None, Query(ge=0, le=_MAX_SEQ)] = None,
        before_seq: Annotated[int | None, Query(ge=1, le=_MAX_SEQ)] = None,
        limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
        after_position: AfterPosition = None,
    ) -> Response:
        size = min(limit or settings.default_page_size, settings.max_page_size)
        if (behind := await caught_up(request, after_position)) is not None:
            return behind
        items = await request.app.state.reads.page(room_id, after_seq, before_seq, size)
        following: str | None = None
        if len(items) == size:
            backwards = before_seq is not None and after_seq is None
            cursor: dict[str, Any] = (
                {"before_seq": items[0]["seq"]} if backwards else {"after_seq": items[-1]["seq"]}
            )
            if before_seq is not None and not backwards:
                cursor["before_seq"] = before_seq
            following = f"/v1/rooms/{room_id}/messages?{urlencode({**cursor, 'limit': size})}"
        return OrjsonResponse({"items": items, "next": following})

    @app.get(
        "/v1/events/{event_id}",
        summary="The projection's outcome of one event",
        responses=problem_responses(404, 422, 503),
    )
    async def get_event(request: Request, event_id: UUID, after_position: AfterPosition = None) -> Response:
        if (behind := await caught_up(request, after_position)) is not None:
            return behind
        outcome = await request.app.state.reads.outcome(str(event_id))
        if outcome is None:
            if after_position is not None:
                return problem(
                    404, "not-found", "The projection has passed that position without this event."
                )
            return OrjsonResponse({"event_id": str(event_id), "status": "pending"})
        return OrjsonResponse(outcome)

    @app.get("/v1/projection", summary="Applied position and lag per partition")
    async def projection(request: Request) -> Response:
        applied = await request.app.state.reads.positions()
        ends = await _end_offsets(request.app.state.admin, kafka.events_topic)
        partitions = []
        for partition in sorted(set(applied) | set(ends or {})):
            done = applied.get(partition, -1)
            end = None if ends is None else ends.get(partition)
            partitions.append(
                {
                    "partition": partition,
                    "applied_offset": done,
                    "end_offset": end,
                    "lag": None if end is None else max(0, end - (done + 1)),
                }
            )
        total = None if ends is None else sum(p["lag"] or 0 for p in partitions)
        return OrjsonResponse({"topic": kafka.events_topic, "partitions": partitions, "lag": total})

    return app


async def _end_offsets(admin: AdminClient, topic: str) -> dict[int, int] | None:
    """The log-end offset of every partition of ``topic``; None when the broker does not answer."""
    try:
        metadata = await asyncio.to_thread(admin.list_topics, topic, 2.0)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return None
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        requests = {TopicPartition(topic, p): latest for p in found.partitions}
        futures = admin.list_offsets(requests, request_timeout=2.0)
        ends: dict[int, int] = {}
        for partition, future in futures.items():
            ends[partition.partition] = (await asyncio.wrap_future(future)).offset
        return ends
    except KafkaException:
        return None
