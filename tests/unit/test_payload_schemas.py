"""The published schemas of deliveries fit what merlin sends; the tests' receiver catches what does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator

from domain import EVENT_TYPES, Event, MessageCreated, MessageUpdated, encode
from tests.downstream import Downstream, PayloadCheck
from webhooks.calls import USER_AGENT, Answer
from webhooks.endpoints import Endpoint, OldSecret
from webhooks.payload_schemas import DIALECT, event_schemas, headers_schema
from webhooks.sending import Deliverer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_" + base64.b64encode(b"an older secret, still signing").decode()
NOW = datetime(2026, 12, 8, 1, 2, 3, 456789, tzinfo=UTC)


def created() -> MessageCreated:
    return MessageCreated(uuid.uuid4(), "room.1", uuid.uuid4(), "alice@example", "hi\tthere 👋", NOW)


def updated(expected: int | None) -> MessageUpdated:
    return MessageUpdated(uuid.uuid4(), "r1", uuid.uuid4(), "u1", "x" * 4000, NOW, expected)


def call(event: Event, rotating: bool = False) -> tuple[dict[str, str], bytes]:
    """The headers and body merlin's deliverer sends for ``event`` (as the receiver sees the headers)."""
    old = (OldSecret(secret=OLD_SECRET, until=datetime.now(UTC) + timedelta(hours=1)),) if rotating else ()
    endpoint = Endpoint.model_validate(
        {"name": "hook", "url": "https://hooks.example/in", "secret": SECRET, "old_secrets": old}
    )
    body = encode(event)
    headers = Deliverer(_no_send, endpoint).signed_headers(str(event.event_id), body)
    # What webhooks.calls adds to every call's head.
    head = {"host": "hooks.example", "user-agent": USER_AGENT, "content-length": str(len(body))}
    return {**headers, **head}, body


async def _no_send(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    raise AssertionError("nothing is sent here")


def test_every_schema_is_json_schema_2020_12() -> None:
    schemas = event_schemas()
    assert set(schemas) == set(EVENT_TYPES)
    for schema in (*schemas.values(), headers_schema()):
        assert schema["$schema"] == DIALECT
        Draft202012Validator.check_schema(schema)
    assert len({schema["$id"] for schema in schemas.values()}) == len(schemas)


@pytest.mark.parametrize("event", [created(), updated(None), updated(3)], ids=["created", "edit", "if-match"])
@pytest.mark.parametrize("rotating", [False, True], ids=["one-secret", "rotating"])
def test_what_merlin_sends_fits_its_schemas(event: Event, rotating: bool) -> None:
    headers, body = call(event, rotating)
    assert headers["webhook-signature"].count("v1,") == (2 if rotating else 1)
    assert PayloadCheck().problems(headers, body) == []


def test_each_event_type_fits_its_own_schema_only() -> None:
    created_body = orjson.loads(encode(created()))
    schemas = event_schemas()
    assert Draft202012Validator(schemas["MessageCreated"]).is_valid(created_body)
    assert not Draft202012Validator(schemas["MessageUpdated"]).is_valid(created_body)


def _drifted(event: Event, change: dict[str, object], header: dict[str, str] | None = None) -> list[str]:
    headers, body = call(event)
    document = orjson.loads(body)
    for name, value in change.items():
        if value is _GONE:
            del document[name]
        else:
            document[name] = value
    return PayloadCheck().problems({**headers, **(header or {})}, orjson.dumps(document))


_GONE = object()


@pytest.mark.parametrize(
    ("change", "header", "wrong"),
    [
        ({"extra": 1}, None, "'extra' was unexpected"),
        ({"expected_version": _GONE}, None, "'expected_version' is a required property"),
        ({"expected_version": 2}, None, "body expected_version"),
        ({"schema_version": 2}, None, "body schema_version"),
        ({"message_id": "not-a-uuid"}, None, "is not a 'uuid'"),
        ({"occurred_at": "2026-12-08 01:02:03"}, None, "is not a 'date-time'"),
        ({"room_id": "-starts-badly"}, None, "body room_id"),
        ({"payload": {"sender_id": "u1", "body": ""}}, None, "body payload/body"),
        ({"event_type": "MessageDeleted"}, None, "event_type 'MessageDeleted' is none of"),
        ({}, {"webhook-signature": "v2,abc"}, "header webhook-signature"),
        ({}, {"webhook-timestamp": "soon"}, "header webhook-timestamp"),
        ({}, {"idempotency-key": str(uuid.uuid4())}, "differ"),
    ],
)
def test_the_receiver_names_what_departs_from_the_schemas(
    change: dict[str, object], header: dict[str, str] | None, wrong: str
) -> None:
    problems = _drifted(created(), change, header)
    assert any(wrong in problem for problem in problems), problems


def test_a_call_verifies_as_the_schemas_say() -> None:
    """The recipe in the descriptions, by hand: HMAC-SHA256 of id.timestamp.body under the decoded secret,
    base64, after ``v1,``; during a rotation the old secret's signature verifies too."""
    headers, body = call(created(), rotating=True)
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for secret in (SECRET, OLD_SECRET):
        key = base64.b64decode(secret.removeprefix("whsec_"))
        expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        assert any(hmac.compare_digest(expected, given) for given in headers["webhook-signature"].split(" "))


async def test_the_tests_downstream_fails_on_a_call_that_departs_and_only_then() -> None:
    server = Downstream()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(server.app()), base_url="http://d") as client:
        headers, body = call(created())
        assert (await client.post("/hooks/good", content=body, headers=headers)).status_code == 200
        server.assert_no_drift()
        headers, body = call(updated(2))
        drifted = body.replace(b'"expected_version":2', b'"expected_version":"2"')
        assert (await client.post("/hooks/bad", content=drifted, headers=headers)).status_code == 200
    with pytest.raises(AssertionError, match=r"1 deliveries depart .* to 'bad': body expected_version"):
        server.assert_no_drift()
    assert not Downstream(check_payloads=False).drifted()
