"""Structured logs: JSON lines for machines, readable lines on a terminal."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

from kernel import tracing

# librdkafka's own log lines (broker connections, rebalances, errors) go through the structured
# logger when a client's configuration carries it: {"logger": KAFKA_LOGGER}. Producers and
# consumers serve them from the threads that poll them.
KAFKA_LOGGER = logging.getLogger("librdkafka")

ACCESS_LOGGER = "merlin.access"
# The access log's own logger, once ``configure_logging`` ran: the same line as any other, written
# straight to the same handler (the standard library's path costs several times as much per line).
_access: structlog.typing.BindableLogger | None = None


class _HandlerWriter:
    """What structlog writes a rendered line to: the root handler's stream, under its lock."""

    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        self._handler = handler

    def msg(self, message: str) -> None:
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(message + "\n")
            handler.flush()
        finally:
            handler.release()

    debug = info = warning = error = critical = exception = msg


def _json(value: Any, **options: Any) -> str:
    """A log line's JSON: orjson's (a fraction of the json module's time), the json module's for what
    orjson refuses (an integer past 64 bits)."""
    try:
        return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, **{"default": repr, **options})


def access_logger() -> Any:
    """The access log's logger: straight to the handler when logging is configured, else structlog's."""
    return _access if _access is not None else structlog.get_logger(ACCESS_LOGGER)


def add_trace_ids(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """``trace_id`` and ``span_id`` of the current span (hex, as OpenTelemetry writes them), if valid.

    Nothing while tracing is off: no span is ever current then.
    """
    if tracing.ENABLED:
        from opentelemetry.trace import get_current_span

        context = get_current_span().get_span_context()
        if context.is_valid:
            event.setdefault("trace_id", format(context.trace_id, "032x"))
            event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def configure_logging(service: str, level: str | None = None) -> None:
    """Route structlog and the standard library's logging through one structured renderer.

    ``level`` defaults to ``MERLIN_LOG_LEVEL`` (``LoggingSettings``).
    """
    global _access
    if level is None:
        from kernel.settings import LoggingSettings

        level = LoggingSettings().level
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer(serializer=_json)
    )

    def add_service(
        _logger: object, _method: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        # Not a context variable: Kafka callbacks log from their own threads.
        event.setdefault("service", service)
        return event

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

    def access_name(
        _logger: object, _method: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event.setdefault("logger", ACCESS_LOGGER)
        return event

    _access = structlog.wrap_logger(
        _HandlerWriter(handler),
        processors=[
            structlog.contextvars.merge_contextvars,
            add_service,
            access_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_trace_ids,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
    # One line per HTTP call or retry is noise at INFO; merlin logs outcomes itself.
    for chatty in ("httpx", "httpcore", "backoff"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def start_observing(service: str) -> None:
    """What each service's process does first: logs configured (``MERLIN_LOG_*``), then tracing
    (``OTEL_*``, off unless asked for; ``kernel.tracing``)."""
    configure_logging(service)
    tracing.setup_tracing(service)
