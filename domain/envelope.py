"""The event envelope of the public contract, as JSON bytes (orjson).

``decode`` never raises anything but MalformedEvent, whatever the bytes: a
record it refuses is a poison event for the dead-letter topic. Well-formed
envelopes, nearly all of them, are decoded by msgspec into typed structs, in C;
anything that path does not take is decoded again field by field, which names
what is wrong (and decides alone what is accepted: the fast path only takes
what it would take too).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

import msgspec
import orjson

from domain.errors import InvalidCommand, MalformedEvent
from domain.model import (
    EVENT_TYPES,
    Event,
    EventType,
    MessageCreated,
    MessageUpdated,
    check_body,
    check_expected_version,
    check_identifier,
)

SCHEMA_VERSION: Final = 1
_FIELDS: Final = frozenset(
    {
        "event_id",
        "event_type",
        "schema_version",
        "room_id",
        "message_id",
        "occurred_at",
        "payload",
        "expected_version",
    }
)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_dict(event: Event) -> dict[str, Any]:
    """The envelope of ``event`` as a JSON-ready dict."""
    return {
        "event_id": str(event.event_id),
        "event_type": event.event_type,
        "schema_version": SCHEMA_VERSION,
        "room_id": event.room_id,
        "message_id": str(event.message_id),
        "occurred_at": format_time(event.occurred_at),
        "payload": {"sender_id": event.sender_id, "body": event.body},
        "expected_version": event.expected_version if isinstance(event, MessageUpdated) else None,
    }


def encode(event: Event) -> bytes:
    """The envelope of ``event`` as JSON bytes."""
    return orjson.dumps(to_dict(event))


def headers(event: Event) -> list[tuple[str, bytes]]:
    """Kafka record headers that let a reader route ``event`` without parsing it."""
    return [
        ("event_type", event.event_type.encode()),
        ("event_id", str(event.event_id).encode()),
    ]


class _Payload(msgspec.Struct):
    sender_id: str
    body: str


class _Envelope(msgspec.Struct):
    event_id: UUID
    event_type: EventType
    schema_version: Literal[1]
    room_id: str
    message_id: UUID
    occurred_at: Annotated[datetime, msgspec.Meta(tz=True)]
    payload: _Payload
    expected_version: int | None = None


_DECODER: Final = msgspec.json.Decoder(_Envelope)


def _fast(data: bytes | bytearray | memoryview | str) -> Event | None:
    """The event in a well-formed envelope, or None for ``from_dict`` to decide (and explain)."""
    try:
        envelope = _DECODER.decode(data)
        room_id = check_identifier("room_id", envelope.room_id)
        sender_id = check_identifier("payload.sender_id", envelope.payload.sender_id)
        body = check_body(envelope.payload.body)
        expected = check_expected_version(envelope.expected_version)
        occurred_at = envelope.occurred_at.astimezone(UTC)
    except (msgspec.DecodeError, InvalidCommand, OverflowError, ValueError):
        return None
    if envelope.event_type == MessageCreated.event_type:
        if expected is not None:
            return None
        return MessageCreated(envelope.event_id, room_id, envelope.message_id, sender_id, body, occurred_at)
    return MessageUpdated(
        envelope.event_id, room_id, envelope.message_id, sender_id, body, occurred_at, expected
    )


def decode(data: bytes | bytearray | memoryview | str | None) -> Event:
    """The event in ``data``; raise MalformedEvent naming what is wrong."""
    if data is None:
        raise MalformedEvent("record has no value")
    event = _fast(data)
    if event is not None:
        return event
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from exc
    return from_dict(document)


def from_dict(document: object) -> Event:
    """The event in an already parsed envelope; raise MalformedEvent naming what is wrong."""
    if not isinstance(document, dict):
        raise MalformedEvent("envelope must be a JSON object")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise MalformedEvent(f"unknown schema_version {version!r} (this reader knows {SCHEMA_VERSION})")
    missing = sorted(_FIELDS - {"expected_version"} - document.keys())
    if missing:
        raise MalformedEvent(f"missing fields: {', '.join(missing)}")
    kind = document["event_type"]
    if kind not in EVENT_TYPES:
        raise MalformedEvent(f"unknown event_type {kind!r}")
    payload = document["payload"]
    if not isinstance(payload, dict):
        raise MalformedEvent("payload must be a JSON object")
    try:
        event_id = _uuid("event_id", document["event_id"])
        message_id = _uuid("message_id", document["message_id"])
        occurred_at = _time(document["occurred_at"])
        room_id = check_identifier("room_id", document["room_id"])
        sender_id = check_identifier("payload.sender_id", payload.get("sender_id"))
        body = check_body(payload.get("body"))
        expected = check_expected_version(document.get("expected_version"))
    except InvalidCommand as exc:
        raise MalformedEvent(str(exc)) from exc
    if kind == MessageCreated.event_type:
        if expected is not None:
            raise MalformedEvent("expected_version: must be null on MessageCreated")
        return MessageCreated(event_id, room_id, message_id, sender_id, body, occurred_at)
    return MessageUpdated(event_id, room_id, message_id, sender_id, body, occurred_at, expected)


def _uuid(field: str, value: object) -> UUID:
    if not isinstance(value, str):
        raise InvalidCommand(field, "must be a UUID string")
    try:
        return UUID(value)
    except ValueError as exc:
        raise InvalidCommand(field, "must be a UUID string") from exc


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidCommand("occurred_at", "must be an RFC 3339 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidCommand("occurred_at", "must be an RFC 3339 string") from exc
    if moment.utcoffset() is None:
        raise InvalidCommand("occurred_at", "must carry a time zone")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidCommand("occurred_at", "is out of range") from exc
