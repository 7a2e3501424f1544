"""What an endpoint receives, as JSON Schema (2020-12) per event type and as OpenAPI 3.1 ``webhooks``.

One source for both: ``event_schema`` and ``HEADERS`` here. The admin API's document
(endpoints are managed through it) embeds them (``openapi_webhooks``); receivers
and merlin's tests validate what they are sent with ``event_schemas`` and
``headers_schema``. Each call is a ``POST`` of the event envelope exactly as the
event log holds it (``domain.envelope``; the write API writes every one), signed
as ``webhooks.sending`` does. The schemas are closed: a member merlin does not
send is a change of this contract, made here, never one a receiver meets first.
"""

from __future__ import annotations

from typing import Any, Final

from domain import EVENT_TYPES, SCHEMA_VERSION, EventType
from domain.model import ID_PATTERN, MAX_BODY_CHARS, MAX_ID_CHARS, MAX_VERSION

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE: Final = "https://merlin.dev/schemas/webhooks/"

SIGNATURE: Final = (
    "Calls are signed by Standard Webhooks (https://www.standardwebhooks.com/): each signature is "
    "`v1,` and the base64 of the HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>` (the body's "
    "bytes exactly as received, before any parsing), keyed with the endpoint's secret (`whsec_` then "
    "base64: the key is those decoded bytes). To verify, compute it with the secret and compare in "
    "constant time with each signature of `webhook-signature` (space-separated: while a secret is "
    "being replaced, one per secret still signing, so the old secret or the new one verifies); one "
    "that matches verifies the call. Refuse a `webhook-timestamp` far from your clock (Standard "
    "Webhooks' libraries allow five minutes), which bounds replays. The `standardwebhooks` "
    "libraries do all of this: `Webhook(secret).verify(body, headers)`."
)
_DELIVERY: Final = (
    "Delivered at least once, in order per room and per endpoint, and only once the projection "
    "applied the event (never a rejected event, nor a repeated create). A retry carries the same "
    "`webhook-id` and `Idempotency-Key` (the event id): drop a call whose id you have handled."
)

_ID = {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": MAX_ID_CHARS}
_UUID = {"type": "string", "format": "uuid"}
_VERSION = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}
_SIGNATURE_PATTERN = r"^v1,[A-Za-z0-9+/]+={0,2}( v1,[A-Za-z0-9+/]+={0,2})*$"

# The headers of every call, by the lower-case name HTTP compares them by: (required, schema, description).
HEADERS: Final[dict[str, tuple[bool, dict[str, Any], str]]] = {
    "content-type": (True, {"type": "string", "const": "application/json"}, "The body is the envelope."),
    "webhook-id": (True, _UUID, "The event id: the same on every retry of the event."),
    "webhook-timestamp": (
        True,
        {"type": "string", "pattern": r"^[0-9]{1,19}$"},
        "When this attempt was signed, in seconds since the Unix epoch.",
    ),
    "webhook-signature": (
        True,
        {"type": "string", "pattern": _SIGNATURE_PATTERN},
        "The attempt's signatures, space-separated. " + SIGNATURE,
    ),
    "idempotency-key": (True, _UUID, "The event id, as `webhook-id`."),
    "traceparent": (
        False,
        {"type": "string", "pattern": r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
        "W3C Trace Context of the delivery attempt, when merlin's tracing is on: the receiver's trace "
        "continues the message's.",
    ),
    "tracestate": (False, {"type": "string"}, "W3C Trace Context's vendor state, with `traceparent`."),
    "user-agent": (False, {"type": "string", "const": "merlin-webhooks"}, "merlin's delivery client."),
    "authorization": (
        False,
        {"type": "string", "pattern": "^Basic "},
        "Basic credentials, when the endpoint's URL holds a user name and password.",
    ),
}
# What OpenAPI states otherwise than as a header parameter (and ignores as one): by the body's media
# type, by a security scheme.
_NOT_PARAMETERS = frozenset({"content-type", "authorization"})


def event_schema(event_type: EventType) -> dict[str, Any]:
    """The envelope of an ``event_type`` event as delivered: JSON Schema without its ``$schema`` and ``$id``
    (which ``event_schemas`` adds), fit to embed in an OpenAPI 3.1 document as it is."""
    created = event_type == "MessageCreated"
    what = "A message was posted" if created else "A message was edited (its new body)"
    # Every member is always there: ``domain.envelope.to_dict`` writes them all.
    properties: dict[str, Any] = {
        "event_id": {**_UUID, "description": "The event's id; `webhook-id` and `Idempotency-Key`."},
        "event_type": {"type": "string", "const": event_type},
        "schema_version": {
            "type": "integer",
            "const": SCHEMA_VERSION,
            "description": "The envelope's version: another is another schema.",
        },
        "room_id": {**_ID, "description": "The room: its events are delivered in order."},
        "message_id": {**_UUID, "description": "The message the event is about."},
        "occurred_at": {
            "type": "string",
            "format": "date-time",
            "description": "When the write API took the command: RFC 3339 in UTC (e.g. "
            "`2026-12-08T00:24:59.123456Z`).",
        },
        "payload": {
            "type": "object",
            "additionalProperties": False,
            "required": ["sender_id", "body"],
            "properties": {
                "sender_id": {**_ID, "description": "Who sent it: the writer's token's `sub`."},
                "body": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_BODY_CHARS,
                    "description": "The text" + ("." if created else ", as edited."),
                },
            },
        },
        "expected_version": (
            {"type": "null", "description": "Always null on a create."}
            if created
            else {
                "anyOf": [_VERSION, {"type": "null"}],
                "description": "The version the editor expected the message at (`If-Match`), if any; "
                "the edit made the next one.",
            }
        ),
    }
    return {
        "title": f"{event_type} delivery",
        "description": f"{what}: the event envelope, the body of the call that delivers it. {_DELIVERY} "
        f"{SIGNATURE}",
        "type": "object",
        "additionalProperties": False,
        "required": list(properties),
        "properties": properties,
    }


def event_schemas() -> dict[EventType, dict[str, Any]]:
    """Each event type's JSON Schema (2020-12) of what an endpoint receives: the call's body."""
    return {
        event_type: {"$schema": DIALECT, "$id": f"{SCHEMA_BASE}{event_type}.json", **event_schema(event_type)}
        for event_type in EVENT_TYPES
    }


def headers_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a call's headers, as an object keyed by lower-case header name (other
    headers, such as ``host`` and ``content-length``, may be there too)."""
    return {
        "$schema": DIALECT,
        "$id": f"{SCHEMA_BASE}headers.json",
        "title": "Delivery headers",
        "description": "The headers of every call. " + SIGNATURE,
        "type": "object",
        "required": [name for name, (required, _, _) in HEADERS.items() if required],
        "properties": {name: {**schema, "description": text} for name, (_, schema, text) in HEADERS.items()},
    }


def openapi_webhooks() -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``webhooks`` of an OpenAPI 3.1 document, one per event type, and the schemas they refer to
    (for ``components.schemas``)."""
    schemas = {f"{event_type}Delivery": event_schema(event_type) for event_type in EVENT_TYPES}
    parameters = [
        {"name": name, "in": "header", "required": required, "schema": schema, "description": text}
        for name, (required, schema, text) in HEADERS.items()
        if name not in _NOT_PARAMETERS
    ]
    webhooks: dict[str, Any] = {
        event_type: {
            "post": {
                "operationId": f"deliver{event_type}",
                "summary": f"{event_type}, delivered to an endpoint that takes it",
                "description": f"A `POST` to the endpoint's URL for each {event_type} event of the "
                f"endpoint's `event_types`. {_DELIVERY} {SIGNATURE}",
                "tags": ["webhooks"],
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{event_type}Delivery"}}
                    },
                },
                "responses": _ANSWERS,
            }
        }
        for event_type in EVENT_TYPES
    }
    return webhooks, schemas


_ANSWERS: Final = {
    "2XX": {"description": "Delivered: the endpoint has the event."},
    "408": {"description": "Tried again, with backoff (or after `Retry-After`), under the retry policy."},
    "429": {"description": "Tried again after `Retry-After` (seconds or an HTTP date), else with backoff."},
    "5XX": {"description": "Tried again, with backoff (or after `Retry-After`), under the retry policy."},
    # Once the retry policy's attempts or time are spent, a 408, 429 or 5XX counts as ``default`` does.
    "default": {
        "description": "Any other answer (a redirect too: it is not followed) refuses the event for good: "
        "it is dead-lettered, or, with `on_failure: block`, the room waits for an operator. No answer "
        "within the endpoint's timeout, or a broken connection, is tried again. Only the answer's "
        "status and `Retry-After` count; at most 64 KiB of its head and of its body are read."
    },
}
