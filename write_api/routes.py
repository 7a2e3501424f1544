"""The write API's routes: parse the request, call the use case, append, answer."""

from __future__ import annotations

import re
from typing import Annotated
from uuid import UUID

from fastapi import FastAPI, Header, Request
from starlette.responses import Response

from domain import InvalidCommand
from kernel.auth import ANYONE, WRITE, Caller
from kernel.http.auth import Forbidden, authorize
from kernel.http.params import RoomId
from kernel.http.problems import problem_responses
from kernel.http.responses import OrjsonResponse
from write_api.messages import create_message, edit_message
from write_api.models import Accepted, CreateMessageRequest, UpdateAccepted, UpdateMessageRequest
from write_api.state import WriteApi

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Retries with the same key make one message."),
]
Traceparent = Annotated[str | None, Header(include_in_schema=False)]
# W3C Trace Context, version 00 and later: version-traceid-parentid-flags, lowercase hex.
_TRACEPARENT = re.compile(r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def _trace(traceparent: str | None) -> str | None:
    """``traceparent`` if it is one (it goes into the log with the event); otherwise dropped."""
    if traceparent is None or _TRACEPARENT.fullmatch(traceparent) is None:
        return None
    return traceparent


def _sender(caller: Caller, claimed: str | None) -> str:
    """The sender is the caller; a ``sender_id`` in the body may only repeat it."""
    if caller is ANYONE:  # authentication disabled: the body says who sends
        if claimed is None:
            raise InvalidCommand("sender_id", "is required when the API does not authenticate callers")
        return claimed
    if claimed is not None and claimed != caller.subject:
        raise Forbidden("sender_id must be the caller (the token's sub).")
    return caller.subject


async def post_message(
    request: Request,
    room_id: RoomId,
    command: CreateMessageRequest,
    idempotency_key: IdempotencyKey = None,
    traceparent: Traceparent = None,
) -> Response:
    caller = authorize(request, WRITE, room_id)
    event = create_message(
        room_id, _sender(caller, command.sender_id), command.body,
        message_id=command.message_id, idempotency_key=idempotency_key,
    )  # fmt: skip
    position = await WriteApi.of(request).append(event, _trace(traceparent))
    return OrjsonResponse(
        {"message_id": str(event.message_id), "event_id": str(event.event_id), "position": str(position)},
        status_code=202,
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
    caller = authorize(request, WRITE, room_id)
    event = edit_message(
        room_id, message_id, _sender(caller, command.sender_id), command.body,
        expected_version=command.expected_version, if_match=if_match, idempotency_key=idempotency_key,
    )  # fmt: skip
    position = await WriteApi.of(request).append(event, _trace(traceparent))
    return OrjsonResponse({"event_id": str(event.event_id), "position": str(position)}, status_code=202)


# Beside what every route answers (kernel.http.openapi): an event the log will never take (413), a log
# that did not take it (503 unavailable) or did not say (503 outcome-unknown).
_WRITE_PROBLEMS = problem_responses("too-large", "unavailable", "outcome-unknown")


def add_routes(app: FastAPI) -> None:
    """Register the routes on ``app`` itself.

    Not through an included ``APIRouter``: FastAPI 0.165 matches included routes
    through wrapper layers that cost about 9 µs of a 100 µs request.
    """
    app.post(
        "/v1/rooms/{room_id}/messages",
        status_code=202,
        response_model=Accepted,
        summary="Post a message",
        operation_id="postMessage",
        responses=_WRITE_PROBLEMS,
    )(post_message)
    app.patch(
        "/v1/rooms/{room_id}/messages/{message_id}",
        status_code=202,
        response_model=UpdateAccepted,
        summary="Edit a message",
        operation_id="editMessage",
        responses=_WRITE_PROBLEMS,
    )(patch_message)
