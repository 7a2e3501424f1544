"""Structured logs: JSON lines for machines, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

# librdkafka's own log lines (broker connections, rebalances, errors) go through the structured
# logger when a client's configuration carries it: {"logger": KAFKA_LOGGER}. Producers and
# consumers serve them from the threads that poll them.
KAFKA_LOGGER = logging.getLogger("librdkafka")


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route structlog and the standard library's logging through one structured renderer."""
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
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
    # One line per HTTP call or retry is noise at INFO; merlin logs outcomes itself.
    for chatty in ("httpx", "httpcore", "backoff"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
