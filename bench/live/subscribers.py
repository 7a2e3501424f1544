"""Subscribers as a load generator: ``python -m bench.live.subscribers SPEC``, a process of its own.

It holds one Server-Sent Events stream per subscriber, on asyncio (uvloop) with httptools parsing the
answers (the parser uvicorn serves with: chunks decoded in C), and tells each delivery's latency from
the send time in the message's body. The same code reads merlin's stream and Centrifugo's
unidirectional one; only how a message is found in an event differs (``accounting``).

SPEC is a JSON file: ``kind`` (merlin or centrifugo), ``host``, ``port``, ``paths`` and ``headers``
by room, ``rooms`` (one per subscriber), ``report`` (where the latencies go, as doubles). It prints
its progress as a JSON line five times a second; a line ``stop`` on its input closes every stream,
writes the latencies and prints its report.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httptools
import orjson
import uvloop

from bench.live.accounting import (
    CONNECTED,
    Connected,
    Message,
    Subscriber,
    Tally,
    centrifugo_message,
    merlin_message,
)
from bench.live.sse import Event, EventStream

Reader = Callable[[Event], Message | Connected | None]
READERS: dict[str, Reader] = {"merlin": merlin_message, "centrifugo": centrifugo_message}
_CONNECTING = 64  # streams being opened at once: a burst of thousands would overflow the listen queue


class Streams:
    """Every stream of this process, and what they saw."""

    def __init__(self, kind: str) -> None:
        self.read = READERS[kind]
        self.ready_on_headers = kind == "merlin"  # Centrifugo is ready at its connect reply
        self.tally = Tally()
        self.open = self.ready = self.failed = self.dropped = 0
        self.errors: dict[str, int] = {}
        self.stopping = False
        self.streams: list[Stream] = []

    def fail(self, why: str) -> None:
        self.failed += 1
        self.errors[why] = self.errors.get(why, 0) + 1

    def progress(self) -> dict[str, int]:
        tally = self.tally
        return {"open": self.open, "ready": self.ready, "primed": tally.primed, "delivered": tally.delivered,
                "failed": self.failed, "dropped": self.dropped}  # fmt: skip


class Stream(asyncio.Protocol):
    """One subscriber's connection: the request, then events for as long as it stays open."""

    def __init__(self, streams: Streams, subscriber: Subscriber, request: bytes) -> None:
        self.streams = streams
        self.subscriber = subscriber
        self.request = request
        self.parser = httptools.HttpResponseParser(self)
        self.events = EventStream()
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio's without deriving from its classes.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(f"unparsable answer: {exc}")
        except (ValueError, KeyError) as exc:  # an event that is no message of the kind expected
            self._end(f"unreadable event: {exc!r}"[:200])

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status != 200:
            self._end(f"HTTP {status}")
            return
        self.streams.open += 1
        if self.streams.ready_on_headers:
            self._ready()

    def on_body(self, body: bytes) -> None:
        now = time.time()
        for event in self.events.feed(body):
            message = self.streams.read(event)
            if message is CONNECTED:
                self._ready()
            elif isinstance(message, Message):
                self.streams.tally.received(self.subscriber, message, now)

    def on_message_complete(self) -> None:
        self._end("the stream ended")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.ready.done():
            self.streams.fail(f"closed before ready: {exc!r}"[:200])
            self.ready.set_result(False)
        elif not self.streams.stopping:
            self.streams.dropped += 1

    def _ready(self) -> None:
        if not self.ready.done():
            self.streams.ready += 1
            self.ready.set_result(True)

    def _end(self, why: str) -> None:
        if not self.ready.done():
            self.streams.fail(why)
            self.ready.set_result(False)
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def request(path: str, host: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream",
             "Cache-Control: no-cache", *(f"{name}: {value}" for name, value in headers.items())]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _open(streams: Streams, spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    host, port = spec["host"], int(spec["port"])
    requests = {room: request(path, host, port, spec["headers"].get(room, {}))
                for room, path in spec["paths"].items()}  # fmt: skip
    gate = asyncio.Semaphore(_CONNECTING)

    async def one(room: str) -> None:
        async with gate:
            stream = Stream(streams, Subscriber(room), requests[room])
            streams.streams.append(stream)
            try:
                await loop.create_connection(lambda: stream, host, port)
            except OSError as exc:
                streams.fail(f"connect: {exc.strerror or exc}")
                return
            await stream.ready

    await asyncio.gather(*(one(room) for room in spec["rooms"]))


async def _report_progress(streams: Streams) -> None:
    while True:
        sys.stdout.write(orjson.dumps(streams.progress()).decode() + "\n")
        sys.stdout.flush()
        await asyncio.sleep(0.2)


async def _until_stopped() -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "stop":
            return


async def main(spec: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    streams = Streams(spec["kind"])
    progress = asyncio.create_task(_report_progress(streams))
    opening = asyncio.create_task(_open(streams, spec))
    await _until_stopped()
    streams.stopping = True
    opening.cancel()
    progress.cancel()
    for stream in streams.streams:
        stream.close()
    tally = streams.tally
    used = resource.getrusage(resource.RUSAGE_SELF)
    return {
        **streams.progress(), "repeated": tally.repeated, "errors": streams.errors,
        "first_at": tally.first_at if tally.delivered else None, "last_at": tally.last_at,
        "heartbeats": sum(stream.events.comments for stream in streams.streams),
        "cpu_s": used.ru_utime + used.ru_stime,
    }, tally.latencies.tobytes()  # fmt: skip


if __name__ == "__main__":
    # One descriptor per stream: as many as this machine lets a process have.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec = orjson.loads(Path(sys.argv[1]).read_bytes())
    report, latencies = uvloop.run(main(spec))
    Path(spec["report"]).write_bytes(latencies)
    sys.stdout.write(orjson.dumps({"final": True, **report}).decode() + "\n")
    sys.stdout.flush()
