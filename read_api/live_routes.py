"""The live rooms' routes: a room's applied changes, or several rooms', as Server-Sent Events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse
from starlette.responses import Response

from domain.errors import InvalidCommand
from domain.model import check_identifier
from kernel.auth import READ, Caller
from kernel.http.auth import authorize
from kernel.http.params import RoomId
from kernel.http.problems import problem_responses
from kernel.http.responses import OrjsonResponse
from kernel.position import Position
from read_api.state import ReadApi

_POSITIONS = r"^\d{1,9}-\d{1,19}(,\d{1,9}-\d{1,19})*$"

Cursor = Annotated[
    str | None,
    Query(
        description="Resume after this event id: a position (`0-15`), or, as a stream of several rooms "
        "gives it, the last position per partition (`0-15,3-42`). `Last-Event-ID` wins over it.",
        pattern=_POSITIONS,
    ),
]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="The `id` of the last event received, as an EventSource sends it when it reconnects.",
    ),
]

Ticket = Annotated[
    str | None,
    Query(
        description="Instead of a bearer token (a browser's EventSource sends no header): a ticket of "
        "`createLiveTicket`, single use, for the rooms it was issued for.",
        max_length=16_384,
    ),
]


class TicketRequest(BaseModel):
    rooms: list[str] = Field(min_length=1, description="Rooms of the token's, which the ticket may stream.")


class LiveTicket(BaseModel):
    ticket: str = Field(description="Pass it as `?ticket=` to a live route, once, within `expires_in` s.")
    expires_in: int


_STREAM = {
    "description": "A stream of Server-Sent Events, one per change the projection applied to the room(s), "
    "in log order per room:\n"
    "- `event: message.created` / `message.updated`, `id:` the change's position (for one room) or the "
    "last position delivered per partition (`0-15,3-42`, for several), `data:` the message as "
    "`getMessage` answered right after the change, with `event_id` and `position`;\n"
    "- `event: lagged`: the client fell a whole buffer behind; the stream ends: resume from the last id;\n"
    "- `event: reload`: the log no longer holds what the stream would resume from; the stream ends: "
    "reload the room and stream it without an id;\n"
    "- `event: expired`: the token expired; the stream ends;\n"
    "- a comment line (`: heartbeat`) when quiet.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}
_PROBLEMS = ("unavailable", "too-many-streams")


def _authorize_rooms(request: Request, api: ReadApi, rooms: list[str]) -> Caller:
    """The caller, once ``rooms`` are at most the process's bound, well formed, and each the caller's."""
    if len(rooms) > api.settings.live_max_rooms:
        raise InvalidCommand("rooms", f"names more than {api.settings.live_max_rooms} rooms")
    for room in rooms:
        check_identifier("rooms", room)
    caller = authorize(request, READ)
    for room in rooms:
        authorize(request, READ, room)
    return caller


def _check(api: ReadApi, caller: Caller) -> Any:
    async def check(position: Position, room: str | None) -> None:
        await api.refuse_impossible(position, caller, room)

    return check


async def stream_room(
    request: Request,
    room_id: RoomId,
    after_position: Cursor = None,
    last_event_id: LastEventId = None,
    ticket: Ticket = None,
) -> Response:
    caller = authorize(request, READ, room_id)
    api = ReadApi.of(request)
    field = "Last-Event-ID" if last_event_id else "after_position"
    return await api.live.open(caller, [room_id], last_event_id or after_position, field, _check(api, caller))


async def stream_rooms(
    request: Request,
    rooms: Annotated[
        str,
        Query(
            description="The rooms, comma-separated (at most `MERLIN_READ_API_LIVE_MAX_ROOMS`).",
            min_length=1,
            max_length=200_000,
        ),
    ],
    after_position: Cursor = None,
    last_event_id: LastEventId = None,
    ticket: Ticket = None,
) -> Response:
    api = ReadApi.of(request)
    wanted = list(dict.fromkeys(room.strip() for room in rooms.split(",")))
    caller = _authorize_rooms(request, api, wanted)
    field = "Last-Event-ID" if last_event_id else "after_position"
    return await api.live.open(caller, wanted, last_event_id or after_position, field, _check(api, caller))


async def create_ticket(request: Request, body: TicketRequest) -> Response:
    api = ReadApi.of(request)
    rooms = list(dict.fromkeys(body.rooms))
    caller = _authorize_rooms(request, api, rooms)
    tickets = api.live.tickets
    assert tickets is not None, "the app sets the tickets"
    api.live.metrics.tickets.labels("issued").inc()
    return OrjsonResponse({"ticket": tickets.issue(caller, rooms), "expires_in": tickets.seconds})


def add_live_routes(app: FastAPI) -> None:
    app.get(
        "/v1/rooms/{room_id}/live",
        summary="A room's changes as they are applied (Server-Sent Events)",
        operation_id="streamRoom",
        response_class=EventSourceResponse,
        responses={200: _STREAM, **problem_responses(*_PROBLEMS)},
    )(stream_room)
    app.get(
        "/v1/live",
        summary="Several rooms' changes as they are applied (Server-Sent Events)",
        operation_id="streamRooms",
        response_class=EventSourceResponse,
        responses={200: _STREAM, **problem_responses(*_PROBLEMS)},
    )(stream_rooms)
    app.post(
        "/v1/live/tickets",
        summary="A single-use ticket to open a live stream without a header (EventSource)",
        operation_id="createLiveTicket",
        response_model=LiveTicket,
    )(create_ticket)
