"""Distributed tracing with OpenTelemetry, set up once per process from the standard ``OTEL_*`` variables.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp`` or ``console``), and off
whatever it says when ``OTEL_SDK_DISABLED=true``. Off, nothing is instrumented: the hot
paths test ``ENABLED`` (one module attribute) and skip every span, header and context.

On, the SDK reads its own variables: the service's name and resource
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``; the name defaults to
``merlin-<service>``), the sampler (``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_SAMPLER_ARG``), the
OTLP exporter's endpoint, headers, timeout and compression, and the batch processor's delays
and queue (``OTEL_BSP_*``). What is checked here first is only what the SDK would otherwise
accept with a warning and ignore: an unknown exporter, sampler, ratio or protocol stops the
service at start with one line saying which variable is wrong.

Spans are exported by a ``BatchSpanProcessor``, whose own thread does the export: the event
loop only appends finished spans to its queue. See decision 0017.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from domain.errors import MerlinError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

# True once ``setup_tracing`` installed a provider in this process: every traced path asks this first.
ENABLED = False

TRACER_NAME = "merlin"
SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
EXPORTERS = frozenset({"otlp", "console"})
PROTOCOLS = frozenset({"http/protobuf", "grpc"})

_provider: TracerProvider | None = None
_tracer: Tracer | None = None

log = structlog.get_logger()


class TracingMisconfigured(MerlinError):
    """An ``OTEL_*`` variable has a value tracing cannot work with."""


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """What the environment asks of tracing, checked; the SDK reads the rest itself."""

    exporters: tuple[str, ...]
    protocol: str = "http/protobuf"


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def tracing_config(env: Mapping[str, str]) -> TracingConfig | None:
    """The tracing ``env`` asks for, or None when it is off; raise ``TracingMisconfigured`` on a bad value."""
    if _true(env.get("OTEL_SDK_DISABLED")):
        return None
    named = [part.strip().lower() for part in env.get("OTEL_TRACES_EXPORTER", "").split(",") if part.strip()]
    exporters = tuple(dict.fromkeys(name for name in named if name != "none"))
    if not exporters:
        return None
    unknown = [name for name in exporters if name not in EXPORTERS]
    if unknown:
        raise TracingMisconfigured(
            f"OTEL_TRACES_EXPORTER={env['OTEL_TRACES_EXPORTER']!r}: merlin exports traces by "
            f"{', '.join(sorted(EXPORTERS))} (or none), not {', '.join(unknown)}"
        )
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in SAMPLERS:
        raise TracingMisconfigured(
            f"OTEL_TRACES_SAMPLER={sampler!r} is none of {', '.join(sorted(SAMPLERS))}"
        )
    if sampler.endswith("traceidratio") and "OTEL_TRACES_SAMPLER_ARG" in env:
        argument = env["OTEL_TRACES_SAMPLER_ARG"]
        try:
            ratio = float(argument)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise TracingMisconfigured(
                f"OTEL_TRACES_SAMPLER_ARG={argument!r}: the ratio of {sampler} is a number from 0 to 1"
            )
    named_protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = (named_protocol or "http/protobuf").strip().lower()
    if "otlp" in exporters and protocol not in PROTOCOLS:
        raise TracingMisconfigured(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: merlin exports OTLP as http/protobuf or grpc"
        )
    return TracingConfig(exporters, protocol)


def default_service_name(service: str) -> str:
    """``merlin-write-api`` for ``write_api``: the name a service has unless ``OTEL_SERVICE_NAME`` says."""
    return f"merlin-{service.replace('_', '-')}"


def _exporter(name: str, protocol: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as Grpc,
            )
        except ImportError as exc:
            raise TracingMisconfigured(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the opentelemetry-exporter-otlp-proto-grpc package, "
                "which is not installed: install it, or use http/protobuf"
            ) from exc
        grpc: SpanExporter = Grpc()
        return grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http()  # endpoint, headers, timeout, compression: from OTEL_EXPORTER_OTLP_* (the SDK's reading)


def setup_tracing(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Install a tracer provider for ``service`` if the environment asks for tracing; True if it did.

    Called once by each service's process at start, before its app or worker is built.
    """
    global ENABLED, _provider, _tracer
    config = tracing_config(os.environ if env is None else env)
    if config is None:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, read by the SDK
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name(service)}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER(_ARG), read by the SDK
    for name in config.exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, config.protocol)))
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer(TRACER_NAME)
    ENABLED = True
    log.info(
        "tracing_on", service_name=resource.attributes.get(SERVICE_NAME),
        exporters=",".join(config.exporters), protocol=config.protocol,
    )  # fmt: skip
    return True


def provider() -> TracerProvider | None:
    """The provider ``setup_tracing`` installed (None: the global one, as in tests)."""
    return _provider


def tracer() -> Tracer:
    """merlin's tracer (the global provider's when tracing was set up elsewhere, as in tests)."""
    if _tracer is not None:
        return _tracer
    from opentelemetry import trace

    return trace.get_tracer(TRACER_NAME)


def flush(timeout_seconds: float = 5.0) -> None:
    """Export the spans finished so far (a service that stops calls this; the SDK shuts down at exit)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_seconds * 1000))


def shutdown() -> None:
    """Flush and stop the exporters; tracing is off afterwards."""
    global ENABLED, _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    ENABLED, _provider, _tracer = False, None, None


# -- W3C trace context in Kafka headers and HTTP headers --------------------------------------------


def header_text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value


def trace_headers(
    headers: Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None,
) -> tuple[str | None, str | None]:
    """The raw ``traceparent`` and ``tracestate`` values of a Kafka record's headers (None when absent)."""
    if not headers:
        return None, None
    pairs: Iterable[tuple[str, str | bytes | None]] = (
        headers.items() if isinstance(headers, Mapping) else headers
    )
    traceparent = tracestate = None
    for name, value in pairs:
        if name == "traceparent":
            traceparent = header_text(value)
        elif name == "tracestate":
            tracestate = header_text(value)
    return traceparent, tracestate


def context_of(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The remote span context these W3C values carry, as a parent context; None if there is none valid."""
    if not traceparent:
        return None
    from opentelemetry import propagate, trace

    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    context = propagate.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def inject_into(carrier: dict[str, str], context: Context | None = None) -> dict[str, str]:
    """Add the W3C headers of ``context`` (``traceparent``, ``tracestate`` if any) to ``carrier``."""
    from opentelemetry import propagate

    propagate.inject(carrier, context)
    return carrier
