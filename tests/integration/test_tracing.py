"""One trace through merlin: a client's request, the write API's produce, the projection, a delivery, the
downstream; the spans exported over OTLP/HTTP to a receiver in the test, the services real processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from merlin.local.service_processes import Services, eventually, free_port
from tests.downstream import Downstream
from tests.integration.hooks import endpoints_file, received
from tests.otlp_receiver import OtlpReceiver


@pytest.fixture
async def collector() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    receiver = OtlpReceiver()
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield receiver, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _tracing(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


async def test_one_trace_from_the_clients_request_to_the_downstream(
    sqlite_services: Services,
    downstream: tuple[Downstream, str],
    collector: tuple[OtlpReceiver, str],
    tmp_path: Path,
) -> None:
    _, url = downstream
    receiver, endpoint = collector
    write = await sqlite_services.write_api(**_tracing(endpoint))
    sqlite_services.forwarder(**endpoints_file(tmp_path, url), **_tracing(endpoint))
    trace_id, client_span = os.urandom(16).hex(), os.urandom(8).hex()
    async with httpx.AsyncClient(headers=write.headers, timeout=30) as client:
        answer = await client.post(
            f"{write.url}/v1/rooms/traced/messages",
            json={"body": "follow me"},
            headers={"traceparent": f"00-{trace_id}-{client_span}-01", "x-request-id": "trace-test-1"},
        )
    assert answer.status_code == 202, answer.text
    assert answer.headers["x-request-id"] == "trace-test-1"
    event_id, position = answer.json()["event_id"], answer.json()["position"]
    topic = sqlite_services.kafka.events_topic
    read = await sqlite_services.read_api(**_tracing(endpoint))
    async with httpx.AsyncClient(headers=read.headers, timeout=30) as client:
        page = await client.get(
            f"{read.url}/v1/rooms/traced/messages",
            params={"after_position": position},
            headers={"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"},
        )
    assert page.status_code == 200, page.text

    def named(name: str, **where: Any) -> dict[str, Any] | None:
        for span in receiver.spans:
            if span["name"] == name and all(span[key] == value for key, value in where.items()):
                return span
        return None

    async def whole() -> dict[str, dict[str, Any]] | None:
        request = named("POST /v1/rooms/{room_id}/messages", trace_id=trace_id)
        produce = named(f"send {topic}", trace_id=trace_id)
        attempt = named("deliver hook", trace_id=trace_id)
        wait = named("wait for projection", trace_id=trace_id)
        if request is None or produce is None or attempt is None or wait is None:
            return None
        batch = next(
            (
                s
                for s in receiver.spans
                if s["name"] == f"process {topic}" and (trace_id, produce["span_id"]) in s["links"]
            ),
            None,
        )
        if batch is None:
            return None
        return {"request": request, "produce": produce, "attempt": attempt, "batch": batch, "wait": wait}

    spans = await eventually(whole, 60, "the request, produce, projection and delivery spans")
    request, produce, attempt, batch = spans["request"], spans["produce"], spans["attempt"], spans["batch"]
    # The write API continued the client's trace; the produce span is the request's child.
    assert request["kind"] == "SERVER"
    assert request["parent_span_id"] == client_span
    assert request["service"] == "merlin-write-api"
    assert produce["kind"] == "PRODUCER"
    assert produce["parent_span_id"] == request["span_id"]
    assert produce["attributes"]["messaging.system"] == "kafka"
    assert produce["attributes"]["messaging.destination.name"] == topic
    assert produce["attributes"]["messaging.operation.type"] == "send"
    assert produce["attributes"]["messaging.kafka.message.key"] == "traced"
    assert "messaging.destination.partition.id" in produce["attributes"]
    assert "messaging.kafka.offset" in produce["attributes"]
    # The projection's batch, in a trace of its own, links to the event's context.
    assert batch["kind"] == "CONSUMER"
    assert batch["service"] == "merlin-forwarder"
    assert batch["attributes"]["messaging.operation.type"] == "process"
    assert batch["attributes"]["messaging.batch.message_count"] >= 1
    # The delivery attempt is the produce span's child, and the downstream got its context.
    assert attempt["kind"] == "CLIENT"
    assert attempt["parent_span_id"] == produce["span_id"]
    assert attempt["attributes"]["merlin.endpoint"] == "hook"
    assert attempt["attributes"]["merlin.delivery.attempt"] == 1
    assert attempt["attributes"]["http.response.status_code"] == 200
    assert attempt["attributes"]["merlin.event_id"] == event_id
    calls = [r for r in await received(url) if r["body"]["event_id"] == event_id]
    assert calls
    assert calls[0]["traceparent"] == f"00-{trace_id}-{attempt['span_id']}-01"
    # The write API's log lines of that request carry its trace and its request id.
    access = [line for line in write.logged("request") if line.get("request_id") == "trace-test-1"]
    assert access
    assert access[0]["trace_id"] == trace_id
    assert access[0]["route"] == "/v1/rooms/{room_id}/messages"
    assert access[0]["status"] == 202
    assert access[0]["sub"] == "u1"
    # The read that waited for the projection shows its wait, in the same trace.
    assert spans["wait"]["service"] == "merlin-read-api"
    assert spans["wait"]["attributes"]["merlin.position"] == position
    assert spans["wait"]["attributes"]["merlin.wait.caught_up"] is True
