"""The HTTP contract of both APIs: clear problem+json errors for what clients send, never a 500."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, Producer

from kernel.auth import SCOPES
from merlin.local.service_processes import Services, free_port
from webhooks.dead_letters import header_map

PROBLEM = "application/problem+json"


@pytest.fixture
async def write(sqlite_services: Services) -> AsyncIterator[httpx.AsyncClient]:
    api = await sqlite_services.write_api()
    # An operator's token too: these tests read /metrics and /openapi.json.
    async with httpx.AsyncClient(
        headers=sqlite_services.headers(scopes=SCOPES), base_url=api.url or "", timeout=30
    ) as client:
        yield client


@pytest.fixture
async def read(sqlite_services: Services) -> AsyncIterator[httpx.AsyncClient]:
    api = await sqlite_services.read_api(MERLIN_READ_API_POSITION_WAIT_SECONDS="0.3")
    # An operator's token too: these tests read /metrics and /openapi.json.
    async with httpx.AsyncClient(
        headers=sqlite_services.headers(scopes=SCOPES), base_url=api.url or "", timeout=30
    ) as client:
        yield client


JSON = {"content-type": "application/json"}


def field_of(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"] == PROBLEM, response.text
    return [error["field"] for error in response.json()["errors"]]


@pytest.mark.parametrize(
    ("body", "status", "fields"),
    [
        ({"sender_id": "u1"}, 422, ["body"]),
        ({"sender_id": 5, "body": "hi"}, 422, ["sender_id"]),
        ({"sender_id": "u1", "body": "hi", "extra": 1}, 422, ["extra"]),
        ({"sender_id": "u1", "body": "hi", "message_id": "nope"}, 422, ["message_id"]),
        ({"sender_id": "u1", "body": "   "}, 422, ["body"]),
        ({"sender_id": "u 1", "body": "hi"}, 422, ["sender_id"]),
        ({"sender_id": "u1", "body": "x" * 4001}, 422, ["body"]),
        ([1, 2], 422, ["body"]),
    ],
)
async def test_invalid_creates_name_the_field(
    write: httpx.AsyncClient, body: object, status: int, fields: list[str]
) -> None:
    response = await write.post("/v1/rooms/r1/messages", json=body)
    assert response.status_code == status
    assert field_of(response) == fields


@pytest.mark.parametrize(
    ("escaped", "says"),
    [
        ("a\\u0000b", "U+0000"),
        ("bell \\u0007", "U+0007"),
        ("x\\ud800", "unicode string"),  # a lone surrogate: refused while parsing
        ("\\udfff", "unicode string"),
    ],
)
async def test_text_no_store_can_keep_is_422_on_create_and_edit(
    write: httpx.AsyncClient, escaped: str, says: str
) -> None:
    # Sent as JSON escapes: a NUL, another control character, lone surrogates.
    content = b'{"sender_id": "u1", "body": "' + escaped.encode() + b'"}'
    for response in (
        await write.post("/v1/rooms/r1/messages", content=content, headers=JSON),
        await write.patch(f"/v1/rooms/r1/messages/{uuid.uuid4()}", content=content, headers=JSON),
    ):
        assert response.status_code == 422, response.text
        assert field_of(response) == ["body"]
        assert says in response.json()["detail"]


async def test_malformed_json_is_400(write: httpx.AsyncClient) -> None:
    response = await write.post(
        "/v1/rooms/r1/messages", content=b'{"sender_id": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["type"].endswith("/malformed-json")


async def test_oversized_bodies_are_413_with_or_without_a_length(write: httpx.AsyncClient) -> None:
    huge = b'{"sender_id": "u1", "body": "' + b"x" * 70_000 + b'"}'
    declared = await write.post(
        "/v1/rooms/r1/messages", content=huge, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(huge), 8192):
            yield huge[start : start + 8192]

    streamed = await write.post(
        "/v1/rooms/r1/messages", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    ("path", "headers", "body", "field"),
    [
        ("/v1/rooms/bad%20room/messages", {}, {"sender_id": "u1", "body": "x"}, "room_id"),
        (
            "/v1/rooms/r1/messages",
            {"Idempotency-Key": "k" * 300},
            {"sender_id": "u1", "body": "x"},
            "Idempotency-Key",
        ),
        (
            "/v1/rooms/r1/messages",
            {"Idempotency-Key": "k1"},
            {"sender_id": "u1", "body": "x", "message_id": str(uuid.uuid4())},
            "message_id",
        ),
    ],
)
async def test_invalid_path_and_headers_name_what_is_wrong(
    write: httpx.AsyncClient, path: str, headers: dict[str, str], body: object, field: str
) -> None:
    response = await write.post(path, json=body, headers=headers)
    assert response.status_code == 422
    assert field_of(response) == [field]


@pytest.mark.parametrize(
    ("headers", "body", "field"),
    [
        ({"If-Match": "soon"}, {"sender_id": "u1", "body": "x"}, "If-Match"),
        ({"If-Match": '"2"'}, {"sender_id": "u1", "body": "x", "expected_version": 3}, "If-Match"),
        ({}, {"sender_id": "u1", "body": "x", "expected_version": 0}, "expected_version"),
        ({}, {"sender_id": "u1", "body": "x", "expected_version": "1"}, "expected_version"),
    ],
)
async def test_invalid_edits_name_what_is_wrong(
    write: httpx.AsyncClient, headers: dict[str, str], body: object, field: str
) -> None:
    response = await write.patch(f"/v1/rooms/r1/messages/{uuid.uuid4()}", json=body, headers=headers)
    assert response.status_code == 422
    assert field_of(response) == [field]


async def test_an_edit_of_a_malformed_message_id_is_422(write: httpx.AsyncClient) -> None:
    response = await write.patch("/v1/rooms/r1/messages/xyz", json={"sender_id": "u1", "body": "x"})
    assert response.status_code == 422
    assert field_of(response) == ["message_id"]


async def test_unknown_routes_and_methods_are_problems(write: httpx.AsyncClient) -> None:
    missing = await write.get("/v2/nothing")
    assert (missing.status_code, missing.headers["content-type"]) == (404, PROBLEM)
    wrong = await write.delete("/v1/rooms/r1/messages")
    assert (wrong.status_code, wrong.headers["content-type"]) == (405, PROBLEM)


async def test_operations_routes(write: httpx.AsyncClient, read: httpx.AsyncClient) -> None:
    assert (
        await write.post("/v1/rooms/r1/messages", json={"sender_id": "u1", "body": "x"})
    ).status_code == 202
    for client in (write, read):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
    metrics = (await write.get("/metrics")).text
    assert (
        'merlin_http_requests_total{method="POST",route="/v1/rooms/{room_id}/messages",'
        'service="write_api",status="202"} 1.0' in metrics
    )
    assert "merlin_write_append_seconds_count 1.0" in metrics
    write_paths = (await write.get("/openapi.json")).json()["paths"]
    assert {"/v1/rooms/{room_id}/messages", "/v1/rooms/{room_id}/messages/{message_id}"} <= set(write_paths)
    read_paths = (await read.get("/openapi.json")).json()["paths"]
    assert {
        "/v1/rooms/{room_id}/messages/{message_id}",
        "/v1/rooms/{room_id}/messages",
        "/v1/events/{event_id}",
        "/v1/projection",
    } <= set(read_paths)


async def test_reads_that_wait_for_a_position_say_so_when_it_is_not_reached(
    read: httpx.AsyncClient, sqlite_services: Services
) -> None:
    producer = Producer(sqlite_services.kafka.client())
    producer.produce(sqlite_services.kafka.events_topic, b"{}", partition=0)
    assert producer.flush(10) == 0
    # No forwarder runs in this test: nothing will project offset 0.
    response = await read.get(f"/v1/rooms/r1/messages/{uuid.uuid4()}", params={"after_position": "0-0"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["type"].endswith("/projection-behind")
    malformed = await read.get("/v1/rooms/r1/messages", params={"after_position": "yesterday"})
    assert malformed.status_code == 422
    assert field_of(malformed) == ["after_position"]
    beyond = await read.get("/v1/rooms/r1/messages", params={"after_position": "0-1"})
    assert beyond.status_code == 422
    assert beyond.json()["detail"] == "after_position: is beyond the end of the event log"


async def test_read_answers_for_unknown_things(read: httpx.AsyncClient) -> None:
    missing = await read.get(f"/v1/rooms/r1/messages/{uuid.uuid4()}")
    assert (missing.status_code, missing.headers["content-type"]) == (404, PROBLEM)
    pending = await read.get(f"/v1/events/{(event_id := uuid.uuid4())}")
    assert pending.json() == {"event_id": str(event_id), "status": "pending"}
    page = await read.get("/v1/rooms/r1/messages", params={"limit": 0})
    assert page.status_code == 422
    assert field_of(page) == ["limit"]
    projection = (await read.get("/v1/projection")).json()
    assert [p["partition"] for p in projection["partitions"]] == [0, 1, 2]
    assert projection["lag"] == 0


async def test_a_broker_that_is_down_gets_503_with_retry_after(sqlite_services: Services) -> None:
    api = await sqlite_services.write_api(
        MERLIN_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        MERLIN_WRITE_API_DELIVERY_TIMEOUT_MS="1000",
    )
    async with httpx.AsyncClient(
        headers=sqlite_services.headers(), base_url=api.url or "", timeout=30
    ) as client:
        response = await client.post("/v1/rooms/r1/messages", json={"sender_id": "u1", "body": "x"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.headers["content-type"] == PROBLEM
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"kafka": False}


async def test_a_key_sent_twice_is_400_naming_it(write: httpx.AsyncClient) -> None:
    content = b'{"sender_id": "u1", "body": "hi", "sender_id": "bob"}'
    response = await write.post("/v1/rooms/r1/messages", content=content, headers=JSON)
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "duplicate key 'sender_id'"
    nested = b'{"body": "hi", "message_id": null, "body": "again"}'
    assert (await write.post("/v1/rooms/r1/messages", content=nested, headers=JSON)).status_code == 400


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_a_body_that_is_not_json_is_415(write: httpx.AsyncClient, content_type: str) -> None:
    for method, path in (
        ("POST", "/v1/rooms/r1/messages"),
        ("PATCH", f"/v1/rooms/r1/messages/{uuid.uuid4()}"),
    ):
        response = await write.request(
            method, path, content=b'{"body": "hi"}', headers={"content-type": content_type}
        )
        assert response.status_code == 415, (method, content_type, response.text)
        assert response.headers["content-type"] == PROBLEM
    typed = {"content-type": "application/merlin+json; charset=utf-8"}
    assert (
        await write.post("/v1/rooms/r1/messages", content=b'{"body": "hi"}', headers=typed)
    ).status_code == 202


async def test_a_body_with_nothing_visible_or_a_control_character_is_422(write: httpx.AsyncClient) -> None:
    for body in ["\u200b\u200b\u2060", "\u0301\u0301\u0301", "\u3164", "\u115f", "\u2800", "\ufffc",
                 "del\x7f", "csi\x9b1m"]:  # fmt: skip
        response = await write.post("/v1/rooms/r1/messages", json={"body": body})
        assert response.status_code == 422, body
        assert field_of(response) == ["body"]


async def test_a_position_in_other_digits_is_422(read: httpx.AsyncClient) -> None:
    response = await read.get("/v1/rooms/r1/messages", params={"after_position": "\u0663-\u0663"})
    assert response.status_code == 422
    assert field_of(response) == ["after_position"]


async def test_a_traceparent_is_kept_only_when_it_is_one(
    sqlite_services: Services, write: httpx.AsyncClient
) -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    sent = {}
    for name, value in {"good": good, "long": good + "0" * 1000, "garbage": "not a trace"}.items():
        response = await write.post(
            f"/v1/rooms/trace-{name}/messages", json={"body": "traced"}, headers={"traceparent": value}
        )
        assert response.status_code == 202, (name, response.text)
        sent[name] = response.json()["event_id"]
    found = await asyncio.to_thread(_records_headers, sqlite_services, set(sent.values()))
    assert found[sent["good"]].get("traceparent") == good
    assert "traceparent" not in found[sent["long"]]
    assert "traceparent" not in found[sent["garbage"]]


def _records_headers(services: Services, wanted: set[str]) -> dict[str, dict[str, str]]:
    """The headers of the events topic's records of ``wanted`` event ids, by event id."""
    config = services.kafka.client({"group.id": f"peek-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer = Consumer(config)
    try:
        consumer.subscribe([services.kafka.events_topic])
        found: dict[str, dict[str, str]] = {}
        deadline = time.monotonic() + 30
        while not wanted <= set(found) and time.monotonic() < deadline:
            for message in consumer.consume(100, 1):
                if message.error() is None:
                    found[orjson.loads(message.value() or b"{}")["event_id"]] = header_map(message.headers())
        return found
    finally:
        consumer.close()


async def test_an_event_the_log_will_never_take_is_413_not_503(sqlite_services: Services) -> None:
    api = await sqlite_services.write_api(MERLIN_KAFKA_CLIENT_CONFIG='{"message.max.bytes": "2000"}')
    async with httpx.AsyncClient(headers=sqlite_services.headers(), base_url=api.url or "") as client:
        response = await client.post("/v1/rooms/r1/messages", json={"body": "x" * 3000})
    assert response.status_code == 413, response.text
    assert "retry-after" not in response.headers
    assert response.headers["content-type"] == PROBLEM
