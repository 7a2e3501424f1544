"""The HTTP edge's protocol fed a connection's bytes cut every way a network may cut them.

A transport of our own decides what each read holds, which real sockets never promise:
head and body in one read, many requests in one, a head's last CRLF CRLF split between
two. Like asyncio's, it refuses a write after its end.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from kernel.http.edge import guarded_protocol
from kernel.http.edge_settings import EdgeSettings

MAX_HEAD = 2048
MAX_BODY = 8000  # the app answers 413 past it, from the head, before the body is read


class Wire(asyncio.Transport):
    """The server's side of a connection: what the protocol wrote, and whether it may read."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.ended = False
        self.closed = False
        self.readable = asyncio.Event()
        self.readable.set()
        self.wrote = asyncio.Event()
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: Any) -> None:
        if self.ended:
            raise RuntimeError("Cannot call write() after write_eof()")
        self.sent += data
        self.wrote.set()

    def write_eof(self) -> None:
        self.ended = True
        self.wrote.set()

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True
        self.wrote.set()

    def pause_reading(self) -> None:
        self.readable.clear()

    def resume_reading(self) -> None:
        self.readable.set()

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers ``METHOD PATH BODY-LENGTH``; ``/slow`` only once released; 413 early past ``MAX_BODY``."""
    scope["state"]["seen"].append(scope["path"])
    headers = dict(scope["headers"])
    status = 200
    if int(headers.get(b"content-length", b"0")) > MAX_BODY:
        status, answer = 413, b"too large"
    else:
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            received += len(message["body"])
            more = message["more_body"]
        if scope["path"] == "/slow":
            await scope["state"]["release"].wait()
        answer = b"%s %s %d" % (scope["method"].encode(), scope["path"].encode(), received)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(answer)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer})


class CountingParser:
    """The protocol's parser, counting the bytes it is given."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.fed = 0

    def feed_data(self, data: Any) -> None:
        self.fed += len(data)
        self.parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


class Connection:
    """One connection to a guarded protocol, fed reads exactly as given."""

    def __init__(self, **limits: Any) -> None:
        settings = EdgeSettings(max_head_bytes=MAX_HEAD, **limits)
        config = uvicorn.Config(app, http=guarded_protocol(settings), lifespan="off", log_config=None)
        self.state = ServerState()
        self.release = asyncio.Event()
        self.seen: list[str] = []  # the paths handed to the app
        self.protocol: HttpToolsProtocol = guarded_protocol(settings)(
            config=config, server_state=self.state, app_state={"release": self.release, "seen": self.seen}
        )
        self.parser = CountingParser(self.protocol.parser)
        self.protocol.parser = self.parser  # type: ignore[assignment]  # it stands in for httptools'
        self.wire = Wire()
        self.wire.set_protocol(self.protocol)
        self.protocol.connection_made(self.wire)

    async def feed(self, reads: Iterable[bytes]) -> None:
        for data in reads:
            # A real transport delivers nothing while reading is paused (pipelined requests queued).
            await asyncio.wait_for(self.wire.readable.wait(), 5)
            if self.wire.ended or self.wire.closed:
                return
            self.protocol.data_received(data)

    async def answers(self, count: int) -> list[tuple[int, bytes]]:
        """The first ``count`` answers, waited for."""
        while len(found := _answers(bytes(self.wire.sent))) < count:
            self.wire.wrote.clear()
            await asyncio.wait_for(self.wire.wrote.wait(), 5)
        return found[:count]

    async def finish(self) -> list[tuple[int, bytes]]:
        """Every answer, once every app has returned: one writing after the end fails, and is logged."""
        while self.state.tasks:  # an answer starts the next pipelined request's app
            await asyncio.wait_for(asyncio.gather(*self.state.tasks), 5)
        self.protocol.connection_lost(None)
        return _answers(bytes(self.wire.sent))


def _answers(sent: bytes) -> list[tuple[int, bytes]]:
    found = []
    while (end := sent.find(b"\r\n\r\n")) >= 0:
        head = sent[:end].lower()
        length = next(int(line[15:]) for line in head.split(b"\r\n") if line.startswith(b"content-length:"))
        if len(sent) < end + 4 + length:
            break
        found.append((int(head.split(b" ")[1]), sent[end + 4 : end + 4 + length]))
        sent = sent[end + 4 + length :]
    return found


def request(method: str, path: str, body: bytes = b"", head_size: int = 0, chunked: bool = False) -> bytes:
    """A request; with ``head_size``, a head of exactly that many bytes (request line to CRLF CRLF)."""
    head = b"%s %s HTTP/1.1\r\nhost: x\r\n" % (method.encode(), path.encode())
    if chunked:
        head += b"transfer-encoding: chunked\r\n"
        body = b"%x\r\n%s\r\n0\r\nx-trailer: t\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    elif body or method == "POST":
        head += b"content-length: %d\r\n" % len(body)
    if head_size:
        head += b"x-pad: " + b"p" * (head_size - len(head) - len(b"x-pad: \r\n\r\n")) + b"\r\n"
    return head + b"\r\n" + body


def cuts(data: bytes, at: Iterable[int]) -> list[bytes]:
    """``data`` read in pieces that end at the offsets ``at``."""
    edges = [0, *sorted({a for a in at if 0 < a < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def every_way(data: bytes, *ends: int) -> Iterator[tuple[str, list[bytes]]]:
    """The reads of interest: all at once; cut at each byte around each of ``ends`` (where a head
    or a request ends); one byte at a time."""
    yield "one read", [data]
    for end in ends:
        for at in range(end - 5, end + 3):
            yield f"cut at {at}", cuts(data, [at])
    yield "byte by byte", [data[n : n + 1] for n in range(len(data))]


@pytest.fixture(autouse=True)
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing the protocol did made an app fail or uvicorn complain (a write after the end would)."""
    with caplog.at_level(logging.WARNING):
        yield
    assert not caplog.records, [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize("body_size", [MAX_HEAD - 100, MAX_HEAD, 3 * MAX_HEAD, MAX_BODY])
async def test_a_body_is_no_head_however_the_request_is_cut(body_size: int) -> None:
    first = request("POST", "/m", b"b" * body_size)
    data = first + request("GET", "/after")
    for way, reads in every_way(data, first.index(b"\r\n\r\n") + 4, len(first)):
        connection = Connection()
        await connection.feed(reads)
        assert await connection.finish() == [(200, b"POST /m %d" % body_size), (200, b"GET /after 0")], way


async def test_requests_pipelined_in_one_read_are_all_answered_in_order() -> None:
    requests = [request("GET", f"/g{n}", head_size=200) if n % 2 else request("POST", f"/p{n}", b"x" * 300)
                for n in range(60)]  # fmt: skip
    data = b"".join(requests)
    assert len(data) > 8 * MAX_HEAD
    expected = [(200, b"GET /g%d 0" % n) if n % 2 else (200, b"POST /p%d 300" % n) for n in range(60)]
    for way, reads in [("one read", [data]), ("reads of 1000 bytes", cuts(data, range(0, len(data), 1000)))]:
        connection = Connection()
        await connection.feed(reads)
        assert await connection.finish() == expected, way


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_head_at_the_limit_is_read_and_one_byte_more_is_431(chunked: bool) -> None:
    for head_size, expected in [(MAX_HEAD, 200), (MAX_HEAD + 1, 431)]:
        data = request("POST", "/m", b"\r\n\r\n" * 10, head_size=head_size, chunked=chunked)
        assert data.index(b"\r\n\r\n") + 4 == head_size
        for way, reads in every_way(data, head_size):
            connection = Connection()
            await connection.feed(reads)
            answers = await connection.finish()
            assert [status for status, _ in answers] == [expected], way
            assert connection.wire.ended == (expected == 431), way


async def test_a_huge_header_is_refused_before_the_parser_holds_it() -> None:
    for reads in (
        [b"GET / HTTP/1.1\r\nx-big: " + b"a" * 10_000_000],
        [b"GET / HTTP/1.1\r\nx-big: "] + [b"a"] * 5000,
    ):
        connection = Connection()
        await connection.feed(reads)
        assert [status for status, _ in await connection.finish()] == [431]
        # The parser keeps a header's value until it ends: it was given no more than a head may be.
        assert connection.parser.fed <= MAX_HEAD


async def test_a_refusal_comes_after_the_answers_to_the_requests_before_it() -> None:
    before = b"".join(request("POST", f"/p{n}", b"x" * 100) for n in range(5))
    for too_large in [
        request("GET", "/big", head_size=MAX_HEAD + 1),
        b"GET /big HTTP/1.1\r\n" + b"x: y\r\n" * 200,
    ]:
        for way, reads in [("one read", [before + too_large]), ("two", [before, too_large])]:
            connection = Connection()
            await connection.feed(reads)
            answers = await connection.finish()
            assert [status for status, _ in answers] == [200] * 5 + [431], way
            assert [body for _, body in answers[:5]] == [b"POST /p%d 100" % n for n in range(5)], way


async def test_a_request_too_slow_is_answered_after_the_one_before_it_and_never_handed_on() -> None:
    connection = Connection(body_timeout_seconds=0.1)
    await connection.feed([request("GET", "/slow") + request("POST", "/never", b"x" * 100)[:-50]])
    # The slow answer is released after the second request's body deadline: both are the loop's
    # timers, which run in the order of their times.
    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + 0.2, connection.release.set)
    answers = await connection.answers(2)
    assert answers == [(200, b"GET /slow 0"), (408, answers[1][1])]
    assert await connection.finish() == answers
    assert connection.wire.ended
    assert connection.seen == ["/slow"]


async def test_a_body_arriving_after_an_early_413_is_no_head_however_it_is_cut() -> None:
    first = request("POST", "/m", b"b" * (MAX_BODY + 3 * MAX_HEAD))
    data = first + request("GET", "/after")
    for way, reads in every_way(data, first.index(b"\r\n\r\n") + 4, len(first)):
        connection = Connection()
        await connection.feed(reads)
        assert await connection.finish() == [(413, b"too large"), (200, b"GET /after 0")], way


async def test_a_chunked_body_and_its_trailers_are_no_head() -> None:
    body = b"\r\n\r\n" * MAX_HEAD  # a chunk's data may hold what ends a head
    first = request("POST", "/m", body, chunked=True)
    data = first + request("GET", "/after")
    for way, reads in every_way(data, first.index(b"\r\n\r\n") + 4, len(first)):
        if way == "byte by byte":
            continue  # as the others, and slow
        connection = Connection()
        await connection.feed(reads)
        assert await connection.finish() == [(200, b"POST /m %d" % len(body)), (200, b"GET /after 0")], way
