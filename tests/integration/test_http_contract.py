"""The HTTP contract of both APIs: clear problem+json errors for what clients send, never a 500."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, Producer
from jsonschema import Draft202012Validator

from kernel.auth import SCOPES
from merlin.local.service_processes import Services, eventually, free_port
from tests.integration.hooks import SECRET, endpoints_file
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


def fits(document: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    """``response`` is an answer ``document`` states for that operation: its status, media type and schema."""
    answers = document["paths"][path][method]["responses"]
    assert str(response.status_code) in answers, (method, path, response.status_code, response.text)
    media = response.headers["content-type"].partition(";")[0]
    schema = answers[str(response.status_code)]["content"][media]["schema"]
    # The document's components at the root, so its "#/components/..." references resolve.
    validator = Draft202012Validator(
        {**schema, "components": document["components"]}, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    errors = [
        f"{'/'.join(map(str, error.path))}: {error.message}"
        for error in validator.iter_errors(response.json())
    ]
    assert errors == [], (method, path, response.text)


async def test_answers_fit_the_schemas_their_documents_state(
    sqlite_services: Services, write: httpx.AsyncClient, read: httpx.AsyncClient
) -> None:
    """What fuzzing rarely reaches: messages that exist, and each kind of event outcome."""
    sqlite_services.forwarder()
    writes, reads = [(await client.get("/openapi.json")).json() for client in (write, read)]
    room, many, one = (
        "/v1/rooms/r1/messages",
        "/v1/rooms/{room_id}/messages",
        "/v1/rooms/{room_id}/messages/{message_id}",
    )
    created = await write.post(room, json={"body": "hi"}, headers={"Idempotency-Key": "k1"})
    fits(writes, many, "post", created)
    message_id = created.json()["message_id"]
    edited = await write.patch(f"{room}/{message_id}", json={"body": "hi!", "expected_version": 1})
    fits(writes, one, "patch", edited)
    refused = await write.patch(f"{room}/{message_id}", json={"body": "hi?", "expected_version": 7})
    fits(writes, one, "patch", refused)
    retried = await write.post(room, json={"body": "hi"}, headers={"Idempotency-Key": "k1"})
    fits(writes, many, "post", retried)
    assert retried.json()["event_id"] == created.json()["event_id"]
    fits(writes, many, "post", await write.post(room, json={"body": "x" * 4001}))
    after = {"after_position": refused.json()["position"]}

    async def projected() -> httpx.Response | None:
        answer = await read.get(f"{room}/{message_id}", params=after)
        return answer if answer.status_code == 200 else None

    fits(reads, one, "get", await eventually(projected, 60, "the projection passed the last write"))
    page = await read.get(room, params={"limit": 1})
    assert page.json()["next"] is not None  # a full page: the following one is named
    fits(reads, many, "get", page)
    statuses = []
    for answer in (created, edited, refused):
        outcome = await read.get(f"/v1/events/{answer.json()['event_id']}", params=after)
        fits(reads, "/v1/events/{event_id}", "get", outcome)
        statuses.append(outcome.json()["status"])
    assert statuses == ["applied", "applied", "rejected"]
    fits(reads, "/v1/events/{event_id}", "get", await read.get(f"/v1/events/{uuid.uuid4()}"))
    fits(reads, "/v1/projection", "get", await read.get("/v1/projection"))
    fits(reads, one, "get", await read.get(f"{room}/{uuid.uuid4()}"))
    fits(reads, many, "get", await read.get(room, params={"limit": 0}))
    for client, document in ((write, writes), (read, reads)):
        fits(document, "/healthz", "get", await client.get("/healthz"))
        fits(document, "/readyz", "get", await client.get("/readyz"))


async def test_the_admin_apis_answers_fit_the_schemas_its_document_states(
    sqlite_services: Services, tmp_path: Path
) -> None:
    env = endpoints_file(tmp_path, "http://127.0.0.1:9")  # defined, never called: no forwarder runs
    service = await sqlite_services.admin_api(**env)
    headers = {"Authorization": f"Bearer {sqlite_services.admin_token}"}
    async with httpx.AsyncClient(base_url=service.url or "", headers=headers, timeout=60) as admin:
        document = (await admin.get("/openapi.json")).json()
        base, named = "/v1/admin/endpoints", "/v1/admin/endpoints/{name}"
        fits(document, base, "get", await admin.get(base))
        fits(document, named, "get", await admin.get(f"{base}/hook"))
        fits(document, named, "get", await admin.get(f"{base}/nope"))
        definition = {"url": "http://127.0.0.1:9/hooks/other", "secret": SECRET, "max_in_flight": 2}
        fits(document, named, "put", await admin.put(f"{base}/other", json=definition))  # 201
        fits(document, named, "put", await admin.put(f"{base}/other", json={"url": definition["url"]}))  # 200
        fits(document, named, "put", await admin.put(f"{base}/other", json={"url": "http://10.0.0.1/"}))
        fits(document, f"{named}/status", "get", await admin.get(f"{base}/hook/status"))
        for action in ("pause", "resume"):
            fits(document, f"{named}/{action}", "post", await admin.post(f"{base}/hook/{action}"))
        rewound = await admin.post(f"{base}/hook/rewind", json={"to": {"0": 0}})
        fits(document, f"{named}/rewind", "post", rewound)
        not_blocked = await admin.post(f"{base}/hook/rooms/r1/unblock", json={"action": "skip"})
        fits(document, f"{named}/rooms/{{room_id}}/unblock", "post", not_blocked)
        replayed = await admin.post("/v1/admin/dead-letters/replay", json={"endpoint": "hook"})
        fits(document, "/v1/admin/dead-letters/replay", "post", replayed)
        fits(document, "/v1/admin/secrets/reseal", "post", await admin.post("/v1/admin/secrets/reseal"))
        assert (await admin.delete(f"{base}/other")).status_code == 204
        assert [answer.status_code for answer in (rewound, not_blocked, replayed)] == [200, 404, 200]
