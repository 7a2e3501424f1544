"""Tracing: its configuration from the OTEL_* variables, trace ids in the logs, and the hand-made spans
(the produce, a delivery attempt) on an in-memory exporter."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from domain import MessageCreated
from kernel import tracing
from kernel.logs import add_trace_ids
from kernel.tracing import TracingConfig, TracingMisconfigured, tracing_config
from tests.unit.scripted import Scripted
from tests.unit.test_delivery import BODY, endpoint
from webhooks.sending import Deliverer
from write_api.appender import EventAppender
from write_api.messages import create_message

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


# -- configuration ---------------------------------------------------------------------------------


def test_off_unless_an_exporter_is_named() -> None:
    assert tracing_config({}) is None
    assert tracing_config({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert tracing_config({"OTEL_TRACES_EXPORTER": " "}) is None
    # Endpoints and samplers alone turn nothing on.
    assert tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) is None


def test_on_with_otlp_over_http_protobuf_by_default() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert tracing_config(env) == TracingConfig(("otlp",), "http/protobuf")
    assert tracing_config({"OTEL_TRACES_EXPORTER": "otlp,console"}) == TracingConfig(("otlp", "console"))
    grpc = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
    assert tracing_config(grpc) == TracingConfig(("otlp",), "grpc")


def test_the_sdk_disabled_wins() -> None:
    assert tracing_config({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) is None
    assert tracing_config({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}) is None
    assert tracing_config({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}) is not None


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "lots",
            },
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "2",
            },
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(TracingMisconfigured, match=named):
        tracing_config(env)


def test_a_good_ratio_passes() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    }
    assert tracing_config(env) == TracingConfig(("otlp",))


def test_grpc_without_its_exporter_is_one_clear_error_and_leaves_tracing_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not installed, whether or not this machine has it: a None in sys.modules makes its import fail.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(TracingMisconfigured, match="opentelemetry-exporter-otlp-proto-grpc"):
        tracing.setup_tracing("write_api", env)
    assert not tracing.ENABLED


def test_off_sets_nothing_up() -> None:
    assert tracing.setup_tracing("write_api", {}) is False
    assert not tracing.ENABLED


def test_each_service_has_its_default_name() -> None:
    assert tracing.default_service_name("write_api") == "merlin-write-api"
    assert tracing.default_service_name("forwarder") == "merlin-forwarder"


def test_trace_headers_are_read_from_a_records_headers() -> None:
    headers: Sequence[tuple[str, str | bytes | None]] = [
        ("event_type", b"MessageCreated"),
        ("traceparent", TRACEPARENT.encode()),
        ("tracestate", b"vendor=1"),
    ]
    assert tracing.trace_headers(headers) == (TRACEPARENT, "vendor=1")
    assert tracing.trace_headers({"traceparent": TRACEPARENT}) == (TRACEPARENT, None)
    assert tracing.trace_headers(None) == (None, None)
    assert tracing.trace_headers([("traceparent", b"\xff")]) == (None, None)
    assert tracing.context_of("garbage") is None
    assert tracing.context_of(None) is None


# -- spans, on an in-memory exporter --------------------------------------------------------------


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test, into memory (not through the global provider: other tests share it)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "ENABLED", True)
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def test_the_log_processor_adds_the_current_spans_ids(spans: InMemorySpanExporter) -> None:
    assert add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}  # no span
    with tracing.tracer().start_as_current_span("work") as span:
        context = span.get_span_context()
        event = add_trace_ids(None, "info", {"event": "x"})
    assert event["trace_id"] == format(context.trace_id, "032x")
    assert event["span_id"] == format(context.span_id, "016x")
    assert len(event["trace_id"]) == 32
    assert len(event["span_id"]) == 16


def test_the_log_processor_adds_nothing_with_tracing_off(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("work"):
        monkeypatch.setattr(tracing, "ENABLED", False)
        assert add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}


class Producer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Any = ()
    ) -> tuple[int, int]:
        self.sent.append({"topic": topic, "key": key, "headers": list(headers)})
        return 2, 41


def _event() -> MessageCreated:
    return create_message("room-1", "u1", "hi", message_id=uuid.uuid4())


async def test_with_tracing_off_the_callers_traceparent_goes_into_the_record_as_it_came() -> None:
    producer = Producer()
    appender = EventAppender(producer, "events")  # type: ignore[arg-type]
    await appender.append(_event(), TRACEPARENT)
    await appender.append(_event())
    first, second = (dict(sent["headers"]) for sent in producer.sent)
    assert first["traceparent"] == TRACEPARENT.encode()
    assert "tracestate" not in first
    assert "traceparent" not in second


async def test_the_produce_is_a_producer_span_whose_context_the_record_carries(
    spans: InMemorySpanExporter,
) -> None:
    producer = Producer()
    appender = EventAppender(producer, "events")  # type: ignore[arg-type]
    parent = tracing.context_of(TRACEPARENT, "vendor=1")
    with tracing.tracer().start_as_current_span("request", context=parent):
        position = await appender.append(_event(), TRACEPARENT)
    assert (position.partition, position.offset) == (2, 41)
    (produce, _request) = spans.get_finished_spans()
    assert produce.name == "send events"
    assert produce.kind is SpanKind.PRODUCER
    context = produce.context
    assert context is not None
    assert produce.attributes is not None
    assert produce.attributes["messaging.system"] == "kafka"
    assert produce.attributes["messaging.destination.name"] == "events"
    assert produce.attributes["messaging.operation.type"] == "send"
    assert produce.attributes["messaging.destination.partition.id"] == "2"
    assert produce.attributes["messaging.kafka.offset"] == 41
    assert produce.attributes["messaging.kafka.message.key"] == "room-1"
    headers = dict(producer.sent[0]["headers"])
    assert headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-01".encode()
    assert headers["tracestate"] == b"vendor=1"
    assert format(context.trace_id, "032x") == TRACEPARENT.split("-")[1]


async def test_each_delivery_attempt_is_a_span_whose_context_the_call_carries(
    spans: InMemorySpanExporter,
) -> None:
    send = Scripted([503, 200])
    attempts = await Deliverer(send, endpoint()).deliver("e1", BODY, TRACEPARENT, "vendor=1")
    assert [a.status for a in attempts] == [503, 200]
    first, second = spans.get_finished_spans()
    for number, (span, call) in enumerate(zip((first, second), send.seen, strict=True), start=1):
        context = span.context
        assert context is not None
        assert span.name == "deliver hook"
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == int(TRACEPARENT.split("-")[2], 16)
        assert context.trace_id == int(TRACEPARENT.split("-")[1], 16)
        assert span.attributes is not None
        assert span.attributes["merlin.delivery.attempt"] == number
        assert span.attributes["merlin.endpoint"] == "hook"
        assert call.headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
        assert call.headers["tracestate"] == "vendor=1"
        assert call.headers["webhook-id"] == "e1"
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["http.response.status_code"] == 503
    assert first.status.status_code is trace.StatusCode.ERROR
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["http.request.resend_count"] == 1


async def test_with_tracing_off_a_call_carries_no_trace_headers() -> None:
    send = Scripted([200])
    await Deliverer(send, endpoint()).deliver("e1", BODY, TRACEPARENT)
    assert "traceparent" not in send.seen[0].headers


def test_an_outage_answered_503_is_an_event_on_the_requests_span(spans: InMemorySpanExporter) -> None:
    from kernel.http.errors import _mark_outage

    with tracing.tracer().start_as_current_span("GET /v1/rooms/{room_id}/messages"):
        _mark_outage("read store", ConnectionRefusedError("refused"))
    (span,) = spans.get_finished_spans()
    (event,) = span.events
    assert event.name == "dependency_unavailable"
    assert event.attributes is not None
    assert event.attributes["merlin.dependency"] == "read store"
    assert event.attributes["error.type"] == "ConnectionRefusedError"
