"""librdkafka's own log lines reach merlin's structured logs (a client on a loopback port nobody serves)."""

from __future__ import annotations

import asyncio
import logging
import socket

import orjson
import pytest
import structlog

from kernel import logs
from kernel.logs import KAFKA_LOGGER, configure_logging
from kernel.producer import AsyncProducer


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_producer_that_cannot_connect_says_so_through_python_logging() -> None:
    loop = asyncio.get_running_loop()
    heard: asyncio.Queue[logging.LogRecord] = asyncio.Queue()

    class Relay(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:  # called on the producer's poll thread
            loop.call_soon_threadsafe(heard.put_nowait, record)

    relay = Relay()
    KAFKA_LOGGER.addHandler(relay)
    producer = AsyncProducer({"bootstrap.servers": f"127.0.0.1:{closed_port()}"})
    try:
        failure = await asyncio.wait_for(heard.get(), 10)
    finally:
        KAFKA_LOGGER.removeHandler(relay)
        await producer.close(timeout=1)
    assert failure.levelno >= logging.WARNING
    assert "Connect to" in failure.getMessage()


def test_structured_lines_name_their_logger(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # configure_logging writes to this test's captured stderr, closed once it ends: what it set up
    # goes back as it was, or a later test in this process logs to a closed file.
    config, access = structlog.get_config(), logs._access
    try:
        configure_logging("forwarder")
        KAFKA_LOGGER.error("FAIL [rdkafka#producer-1]: Connect to ipv4#127.0.0.1:1 failed")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
        logs._access = access
    line = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["logger"], line["level"], line["service"]) == ("librdkafka", "error", "forwarder")
    assert line["event"].startswith("FAIL [rdkafka#producer-1]")
