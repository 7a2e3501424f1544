"""The read API's routes: messages, pages of a room, event outcomes and projection lag."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

from fastapi import FastAPI, Query, Request
from starlette.responses import Response

from kernel.auth import READ
from kernel.http.auth import authorize
from kernel.http.params import AfterPosition, RoomId
from kernel.http.problems import problem_responses
from kernel.http.responses import OrjsonResponse, problem
from read_api.models import EventOutcome, Message, MessagePage, Projection
from read_api.state import ReadApi

# seq is a 64-bit column: larger values are refused rather than overflow the driver.
_MAX_SEQ = 2**63 - 1


async def get_message(
    request: Request, room_id: RoomId, message_id: UUID, after_position: AfterPosition = None
) -> Response:
    caller = authorize(request, READ, room_id)
    api = ReadApi.of(request)
    if (behind := await api.caught_up(after_position, caller, room_id)) is not None:
        return behind
    message = await api.reads.message(room_id, str(message_id))
    if message is None:
        return problem(404, "not-found", "No such message.", f"room {room_id}, message {message_id}")
    return OrjsonResponse(message)


async def list_messages(
    request: Request,
    room_id: RoomId,
    after_seq: Annotated[int | None, Query(ge=0, le=_MAX_SEQ)] = None,
    before_seq: Annotated[int | None, Query(ge=1, le=_MAX_SEQ)] = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    after_position: AfterPosition = None,
) -> Response:
    caller = authorize(request, READ, room_id)
    api = ReadApi.of(request)
    size = min(limit or api.settings.default_page_size, api.settings.max_page_size)
    if (behind := await api.caught_up(after_position, caller, room_id)) is not None:
        return behind
    items = await api.reads.page(room_id, after_seq, before_seq, size)
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


async def get_event(request: Request, event_id: UUID, after_position: AfterPosition = None) -> Response:
    caller = authorize(request, READ)
    api = ReadApi.of(request)
    if (behind := await api.caught_up(after_position, caller)) is not None:
        return behind
    outcome = await api.reads.outcome(str(event_id))
    if outcome is not None and not caller.may_use(outcome["room_id"] or ""):
        outcome = None  # another room's event is answered as one the projection does not know
    if outcome is None:
        if after_position is not None:
            return problem(404, "not-found", "The projection has passed that position without this event.")
        return OrjsonResponse({"event_id": str(event_id), "status": "pending"})
    return OrjsonResponse(outcome)


async def projection(request: Request) -> Response:
    return OrjsonResponse(await ReadApi.of(request).projection())


# What a read answers beside what every route does (kernel.http.openapi): a read store that does not
# answer, and the waits of ``after_position`` (read_api.state), bounded per caller and per process.
_WAITED = ("unavailable", "too-many-waiting-reads", "projection-behind", "too-many-waiters")


def add_routes(app: FastAPI) -> None:
    """Register the routes on ``app`` itself.

    Not through an included ``APIRouter``: FastAPI 0.165 matches included routes
    through wrapper layers that cost about 9 µs of a 100 µs request.
    """
    app.get(
        "/v1/rooms/{room_id}/messages/{message_id}",
        summary="One message",
        operation_id="getMessage",
        response_model=Message,
        responses=problem_responses("not-found", *_WAITED),
    )(get_message)
    app.get(
        "/v1/rooms/{room_id}/messages",
        summary="A room's messages in seq order",
        operation_id="listRoomMessages",
        response_model=MessagePage,
        responses=problem_responses(*_WAITED),
    )(list_messages)
    app.get(
        "/v1/events/{event_id}",
        summary="The projection's outcome of one event",
        description="`pending` while the projection has not seen the event, or when it is another "
        "room's than the token's; with `after_position`, 404 once the projection passed it without it.",
        operation_id="getEventOutcome",
        response_model=EventOutcome,
        responses=problem_responses("not-found", *_WAITED),
    )(get_event)
    app.get(
        "/v1/projection",
        summary="Applied position and lag per partition",
        operation_id="getProjection",
        response_model=Projection,
        responses=problem_responses("unavailable"),
    )(projection)
