"""The admin API's routes: endpoints, their status, pause/resume, rewind, unblock, dead-letter replay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import FastAPI, Path, Request
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from starlette.responses import Response

from admin_api import operations
from admin_api.models import (
    EndpointList,
    EndpointStatus,
    EndpointView,
    Paused,
    Replayed,
    Resealed,
    Rewound,
    Unblocked,
)
from admin_api.replay import Wanted, read_dead_letters, replay
from admin_api.state import AdminApi
from domain.errors import InvalidCommand
from domain.model import ID_PATTERN
from kernel.control import PAUSED, key
from kernel.http.params import RoomId
from kernel.http.problems import problem_responses
from kernel.http.responses import OrjsonResponse
from webhooks.catalog import ENDPOINT, SecretRequired, encode, merged, resealed
from webhooks.endpoints import NAME_PATTERN, EndpointSpec
from webhooks.url_safety import UnsafeAddress, check_url

EndpointName = Annotated[str, Path(pattern=NAME_PATTERN)]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _in_the_log(moment: datetime) -> datetime:
    if moment < _EPOCH:  # Kafka's timestamps count milliseconds from the epoch; those before are flags
        raise ValueError("must be at or after 1970-01-01T00:00:00Z, where Kafka's timestamps start")
    return moment


# A time (RFC 3339, with its offset) a record of the log may have been written at.
LogTime = Annotated[AwareDatetime, AfterValidator(_in_the_log)]


class Rewind(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A time, or the offset to start from per partition.
    to: LogTime | dict[int, Annotated[int, Field(ge=0)]]


class Unblock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "skip"]


class Replay(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    endpoint: str
    room_id: Annotated[str | None, Field(pattern=ID_PATTERN, max_length=128)] = None
    since: Annotated[LogTime | None, Field(alias="from")] = None
    until: Annotated[LogTime | None, Field(alias="to")] = None


async def list_endpoints(request: Request) -> Response:
    api = AdminApi.of(request)
    return OrjsonResponse(
        {"items": [api.view(name, record) for name, record in sorted(api.records().items())]}
    )


async def get_endpoint(request: Request, name: EndpointName) -> Response:
    api = AdminApi.of(request)
    return OrjsonResponse(api.view(name, api.record(name)))


async def put_endpoint(request: Request, name: EndpointName, body: EndpointSpec) -> Response:
    api = AdminApi.of(request)
    try:
        await check_url(body.url, api.endpoint_settings.allowed_networks)
    except UnsafeAddress as exc:
        raise InvalidCommand("url", str(exc)) from None
    record = api.control.values.get(key(ENDPOINT, name))
    current = api.readable_endpoint(name)
    now = datetime.now(UTC)
    try:
        endpoint = merged(name, body, current, now)
    except SecretRequired as exc:
        raise InvalidCommand("secret", str(exc)) from None
    version = int(record["version"]) + 1 if record is not None else 1
    stored = encode(endpoint, api.box, version, now)
    await api.writer.put(key(ENDPOINT, name), stored)
    api.acted("define", name, version=version, url=endpoint.shown_url)
    return OrjsonResponse(api.view(name, stored), status_code=201 if record is None else 200)


async def reseal_secrets(request: Request) -> Response:
    api = AdminApi.of(request)
    names = sorted(api.records())
    for name in names:
        await api.writer.put(key(ENDPOINT, name), resealed(api.record(name), api.box))
    api.acted("reseal", "*", endpoints=len(names))
    return OrjsonResponse({"resealed": names})


async def delete_endpoint(request: Request, name: EndpointName) -> Response:
    api = AdminApi.of(request)
    api.record(name)
    await api.writer.delete(key(ENDPOINT, name))
    if key(PAUSED, name) in api.control.values:  # an endpoint defined again later starts unpaused
        await api.writer.delete(key(PAUSED, name))
    api.acted("delete", name)
    return Response(status_code=204)


async def endpoint_status(request: Request, name: EndpointName) -> Response:
    return OrjsonResponse(await operations.status(AdminApi.of(request), name))


async def pause(request: Request, name: EndpointName) -> Response:
    return OrjsonResponse(await operations.pause(AdminApi.of(request), name))


async def resume(request: Request, name: EndpointName) -> Response:
    return OrjsonResponse(await operations.resume(AdminApi.of(request), name))


async def rewind(request: Request, name: EndpointName, body: Rewind) -> Response:
    to: datetime | dict[int, int] = body.to
    return OrjsonResponse(await operations.rewind(AdminApi.of(request), name, to))


async def unblock(request: Request, name: EndpointName, room_id: RoomId, body: Unblock) -> Response:
    answer = await operations.unblock(AdminApi.of(request), name, room_id, body.action)
    return OrjsonResponse(answer, status_code=200 if answer["done"] else 202)


async def replay_dead_letters(request: Request, body: Replay) -> Response:
    api = AdminApi.of(request)
    endpoint = api.endpoint(body.endpoint)
    wanted = Wanted(body.endpoint, body.room_id, body.since, body.until)
    letters = await asyncio.to_thread(
        read_dead_letters, api.kafka.client(), api.kafka.dead_letter_topic, wanted
    )
    answer = await replay(api.send, endpoint, letters, api.settings.replay_max)
    api.acted(
        "replay", body.endpoint, room=body.room_id, matched=answer["matched"],
        delivered=len(answer["delivered"]), failed=len(answer["failed"]),
    )  # fmt: skip
    return OrjsonResponse(answer)


# Beside what every route answers (kernel.http.openapi): no such endpoint (404), one whose record this
# version cannot read (409), Kafka not answering or not taking a write (503).
_NAMED = ("not-found", "conflict", "unavailable", "outcome-unknown")
_CHANGE = ("unavailable", "outcome-unknown")


def add_routes(app: FastAPI) -> None:
    """Register the routes on ``app`` itself."""
    base = "/v1/admin/endpoints"
    app.get(base, summary="The endpoints", operation_id="listEndpoints", response_model=EndpointList)(
        list_endpoints
    )
    app.get(
        base + "/{name}",
        summary="One endpoint",
        operation_id="getEndpoint",
        response_model=EndpointView,
        responses=problem_responses("not-found"),
    )(get_endpoint)
    app.put(
        base + "/{name}",
        summary="Define an endpoint, or change its definition (a secret left out is kept)",
        description="201 when it is new, 200 when it changed. A URL on an inner address (loopback, "
        "private, link-local, unspecified; a name by every address it resolves to) is 422 unless in a "
        "network of `MERLIN_ENDPOINTS_ALLOW_NETWORKS`.",
        operation_id="putEndpoint",
        response_model=EndpointView,
        status_code=200,
        responses={
            201: {"description": "Defined", "model": EndpointView},
            **problem_responses(*_CHANGE),
        },
    )(put_endpoint)
    app.post(
        "/v1/admin/secrets/reseal",
        summary="Seal every endpoint secret again under the first of MERLIN_ENDPOINTS_SECRET_KEYS",
        operation_id="resealSecrets",
        response_model=Resealed,
        responses=problem_responses(*_CHANGE),
    )(reseal_secrets)
    app.delete(
        base + "/{name}",
        summary="Stop delivering to an endpoint and forget it",
        operation_id="deleteEndpoint",
        status_code=204,
        responses=problem_responses("not-found", *_CHANGE),
    )(delete_endpoint)
    app.get(
        base + "/{name}/status",
        summary="Offsets, lag, oldest undelivered event, pause, blocked rooms and rates",
        operation_id="getEndpointStatus",
        response_model=EndpointStatus,
        responses=problem_responses("not-found", "conflict", "unavailable"),
    )(endpoint_status)
    app.post(
        base + "/{name}/pause",
        summary="Stop delivering",
        operation_id="pauseEndpoint",
        response_model=Paused,
        responses=problem_responses(*_NAMED),
    )(pause)
    app.post(
        base + "/{name}/resume",
        summary="Deliver again",
        operation_id="resumeEndpoint",
        response_model=Paused,
        responses=problem_responses(*_NAMED),
    )(resume)
    app.post(
        base + "/{name}/rewind",
        summary="Deliver again from a time or from offsets",
        description="409 when the endpoint's forwarders did not leave its group in time: nothing moved.",
        operation_id="rewindEndpoint",
        response_model=Rewound,
        responses=problem_responses(*_NAMED),
    )(rewind)
    app.post(
        base + "/{name}/rooms/{room_id}/unblock",
        summary="Retry a blocked room's head event now, or skip it to the dead-letter topic",
        description="200 when the forwarder holding the room carried it out within 3 s, else 202. "
        "404 when the room is not blocked.",
        operation_id="unblockRoom",
        response_model=Unblocked,
        responses={
            202: {"description": "Asked, not carried out yet", "model": Unblocked},
            **problem_responses(*_NAMED),
        },
    )(unblock)
    app.post(
        "/v1/admin/dead-letters/replay",
        summary="Deliver an endpoint's dead-lettered events again",
        operation_id="replayDeadLetters",
        response_model=Replayed,
        responses=problem_responses("not-found", "conflict", "unavailable"),
    )(replay_dead_letters)
