"""The event envelope: exact round trips, and one clear error for any bad bytes."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain import (
    EVENT_TYPES,
    Event,
    MalformedEvent,
    MessageCreated,
    MessageUpdated,
    decode,
    encode,
    headers,
)
from domain.envelope import _fast, from_dict, to_dict
from tests.unit.strategies import created, events
from webhooks.endpoints import Endpoint

SECRET = "whsec_" + base64.b64encode(b"s" * 24).decode()
_NOW = datetime(2026, 11, 25, tzinfo=UTC)


@given(events)
def test_decode_inverts_encode(event: Event) -> None:
    assert decode(encode(event)) == event


def _decodes_or_refuses(data: bytes) -> None:
    try:
        event = decode(data)
    except MalformedEvent as exc:
        message = str(exc)
        assert message, "a refusal must say what is wrong"
    else:
        assert isinstance(event, MessageCreated | MessageUpdated)


@given(st.binary(max_size=2000))
def test_no_bytes_make_decode_raise_anything_but_malformed_event(data: bytes) -> None:
    _decodes_or_refuses(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@given(events, json_values)
def test_any_field_replaced_by_any_json_is_decoded_or_refused_cleanly(event: Event, value: object) -> None:
    envelope = to_dict(event)
    for field in envelope:
        _decodes_or_refuses(orjson.dumps({**envelope, field: value}))
    for field in envelope["payload"]:
        payload = {**envelope["payload"], field: value}
        _decodes_or_refuses(orjson.dumps({**envelope, "payload": payload}))


def _same_either_way(data: bytes) -> None:
    """The typed fast path takes only what the field-by-field decoder takes, and decodes it alike."""
    fast = _fast(data)
    if fast is None:
        return
    assert fast == from_dict(orjson.loads(data))


MOMENTS = [
    "2026-11-25T02:07:59Z", "2026-11-25T02:07:59", "2026-11-25", "2026-11-25T02:07:59.5+14:00",
    "0001-01-01T00:00:00+01:00", "2026-11-25 02:07:59+00:00", "2026-W48-3T02:07:59Z",
]  # fmt: skip


@given(events, json_values, st.sampled_from(MOMENTS))
def test_the_fast_path_never_takes_what_the_field_by_field_decoder_refuses(
    event: Event, value: object, moment: str
) -> None:
    envelope = to_dict(event)
    _same_either_way(orjson.dumps({**envelope, "occurred_at": moment}))
    for field in envelope:
        _same_either_way(orjson.dumps({**envelope, field: value}))
    for field in envelope["payload"]:
        _same_either_way(orjson.dumps({**envelope, "payload": {**envelope["payload"], field: value}}))
    for version in (True, 0, 2, 1.0, "1"):
        _same_either_way(orjson.dumps({**envelope, "schema_version": version}))
    for uid in (
        str(event.event_id).upper(),
        str(event.event_id).replace("-", ""),
        "{" + str(event.event_id) + "}",
    ):
        _same_either_way(orjson.dumps({**envelope, "event_id": uid}))


def test_a_repeated_key_is_read_as_the_field_by_field_decoder_reads_it() -> None:
    envelope = to_dict(MessageCreated(uuid.uuid4(), "a", uuid.uuid4(), "u1", "hi", _NOW))
    text = orjson.dumps(envelope).decode()
    repeated = text[:-1] + ',"room_id":"b"}'
    assert decode(repeated.encode()).room_id == from_dict(orjson.loads(repeated)).room_id == "b"


@given(created)
def test_the_envelope_has_the_fields_of_the_contract(event: MessageCreated) -> None:
    document = orjson.loads(encode(event))
    assert set(document) == {
        "event_id", "event_type", "schema_version", "room_id", "message_id",
        "occurred_at", "payload", "expected_version",
    }  # fmt: skip
    assert document["event_type"] == "MessageCreated"
    assert document["schema_version"] == 1
    assert document["occurred_at"].endswith("Z")
    assert document["payload"] == {"sender_id": event.sender_id, "body": event.body}
    assert dict(headers(event)) == {
        "event_type": b"MessageCreated",
        "event_id": str(event.event_id).encode(),
    }


def _valid() -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "MessageUpdated",
        "schema_version": 1,
        "room_id": "r1",
        "message_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-23T10:00:00Z",
        "payload": {"sender_id": "u1", "body": "hi"},
        "expected_version": 2,
    }


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"schema_version": 2}, "schema_version"),
        ({"schema_version": True}, "schema_version"),
        ({"event_type": "MessageDeleted"}, "event_type"),
        ({"event_id": "nope"}, "event_id"),
        ({"occurred_at": "2026-11-23T10:00:00"}, "occurred_at"),
        ({"room_id": ""}, "room_id"),
        ({"payload": {"sender_id": "u1", "body": "   "}}, "body"),
        ({"payload": []}, "payload"),
        ({"expected_version": 0}, "expected_version"),
    ],
)
def test_the_error_names_what_is_wrong(change: dict[str, object], names: str) -> None:
    with pytest.raises(MalformedEvent, match=names):
        decode(orjson.dumps({**_valid(), **change}))


def test_missing_fields_are_listed() -> None:
    document = _valid()
    del document["room_id"], document["payload"]
    with pytest.raises(MalformedEvent, match="missing fields: payload, room_id"):
        decode(orjson.dumps(document))


@pytest.mark.parametrize("data", [None, b"", b"{", b"[]", b"null", "\udcff"])
def test_non_envelopes_are_malformed(data: bytes | str | None) -> None:
    with pytest.raises(MalformedEvent):
        decode(data)


def test_every_list_of_event_types_derives_from_the_one_registry() -> None:
    assert {MessageCreated.event_type, MessageUpdated.event_type} == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == len(set(EVENT_TYPES)) == 2
    assert Endpoint.model_fields["event_types"].default == frozenset(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        assert Endpoint(name="e", url="http://x.test", secret=SECRET, event_types=[event_type])
    with pytest.raises(ValidationError):
        Endpoint(name="e", url="http://x.test", secret=SECRET, event_types=["MessageDeleted"])
