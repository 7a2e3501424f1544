"""The HTTP edge, on the real write API over raw sockets: big heads, slow clients, silent connections.

Raw sockets, so each test decides what goes in one write: a head with its body, many
requests at once, a head dribbled. The kernel may still cut or join what a read returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from merlin.local.service_processes import Service, Services

BODY = b'{"body": "hi"}'
MAX_HEAD = 16 * 1024  # the edge's default
MAX_BODY = 64 * 1024  # the write API's default


def _address(service: Service) -> tuple[str, int]:
    parts = urlsplit(service.url or "")
    return parts.hostname or "127.0.0.1", parts.port or 80


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _status_of(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    answer = await asyncio.wait_for(reader.read(65536), 30)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, answer


async def _whole_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response read to its end (head, then content-length bytes): the next read starts the next."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    body = await asyncio.wait_for(reader.readexactly(length), 30)
    return int(head.split(b" ", 2)[1]), head + body


@contextlib.asynccontextmanager
async def connection(service: Service) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(*_address(service))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _head(service: Service, extra: bytes = b"", length: int = len(BODY)) -> bytes:
    token = service.headers["Authorization"].encode()
    return (
        b"POST /v1/rooms/r1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: " + token + b"\r\ncontent-length: %d\r\n" % length + extra
    )


async def test_a_one_megabyte_header_is_431_and_costs_the_process_next_to_nothing(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    before = _rss_kib(write.process.pid)
    async with connection(write) as (reader, writer):
        writer.write(_head(write, b"x-big: "))
        status = 0
        with contextlib.suppress(ConnectionError):
            for _ in range(16):  # 1 MiB in 64 KiB pieces, as a client streaming a header would
                writer.write(b"a" * 65536)
                await writer.drain()
        status, answer = await _status_of(reader)
    assert status == 431, answer[:200]
    assert b"application/problem+json" in answer
    assert _rss_kib(write.process.pid) - before < 20 * 1024
    async with httpx.AsyncClient(headers=write.headers, base_url=write.url or "") as client:
        assert (await client.post("/v1/rooms/r1/messages", json={"body": "still fine"})).status_code == 202
    await _no_errors(write)


async def test_a_body_still_arriving_after_an_early_413_is_not_taken_for_the_next_head(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    token = write.headers["Authorization"].encode()
    size = 70_000  # over the 64 KiB limit: answered 413 from the head, before the body is read
    head = (
        b"POST /v1/rooms/r1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: " + token + b"\r\ncontent-length: %d\r\n\r\n" % size
    )
    async with connection(write) as (reader, writer):
        writer.write(head + b"x" * 1000)
        status, _ = await _whole_response(reader)
        assert status == 413
        # The rest of the body (67 KB: more than a head may be), and the start of the next request.
        writer.write(b"x" * (size - 1000) + b"GET /healthz HTTP/1.1\r\n")
        await writer.drain()
        # A round trip on another connection: by its answer the server has read those bytes alone.
        async with httpx.AsyncClient(base_url=write.url or "") as other:
            assert (await other.get("/healthz")).status_code == 200
        writer.write(b"host: x\r\n\r\n")
        status, answer = await _whole_response(reader)
    assert status == 200, answer[:200]
    await _no_errors(write)


async def test_too_many_headers_are_431(sqlite_services: Services) -> None:
    write = await sqlite_services.write_api()
    many = b"".join(b"x-h%d: v\r\n" % n for n in range(150))
    async with connection(write) as (reader, writer):
        writer.write(_head(write, many) + b"\r\n" + BODY)
        status, _ = await _status_of(reader)
    assert status == 431
    await _no_errors(write)


async def test_a_head_or_body_that_never_finishes_is_408(sqlite_services: Services) -> None:
    write = await sqlite_services.write_api(
        MERLIN_HTTP_HEAD_TIMEOUT_SECONDS="1", MERLIN_HTTP_BODY_TIMEOUT_SECONDS="1"
    )
    async with connection(write) as (reader, writer):
        writer.write(b"POST /v1/rooms/r1/messages HTTP/1.1\r\nhost: x\r\n")  # and then nothing
        started = time.monotonic()
        status, answer = await _status_of(reader)
    assert status == 408, answer[:200]
    assert time.monotonic() - started < 10
    async with connection(write) as (reader, writer):
        writer.write(_head(write) + b"\r\n" + BODY[:5])  # the head, then part of the body
        status, _ = await _status_of(reader)
    assert status == 408
    await _no_errors(write)


async def test_silent_connections_do_not_keep_a_normal_client_out(sqlite_services: Services) -> None:
    """300 connections that never speak, against a process allowed 256 open files."""
    write = await sqlite_services.write_api(MERLIN_HTTP_HEAD_TIMEOUT_SECONDS="2")
    resource.prlimit(write.process.pid, resource.RLIMIT_NOFILE, (256, 256))
    silent = []
    for _ in range(300):
        with contextlib.suppress(OSError):
            silent.append(await asyncio.open_connection(*_address(write)))
    try:
        started = time.monotonic()
        async with httpx.AsyncClient(headers=write.headers, base_url=write.url or "", timeout=30) as client:
            answer = None
            while answer is None and time.monotonic() - started < 30:
                try:
                    answer = await client.post("/v1/rooms/r1/messages", json={"body": "let me in"})
                except httpx.TransportError:  # refused or reset while the process is out of files
                    await asyncio.sleep(0.1)
            assert answer is not None
            assert answer.status_code == 202
        assert time.monotonic() - started < 15  # the silent ones were closed after 2 s
    finally:
        for _, writer in silent:
            writer.close()


async def test_past_the_connection_cap_a_client_gets_503_with_retry_after(sqlite_services: Services) -> None:
    write = await sqlite_services.write_api(MERLIN_HTTP_MAX_CONNECTIONS="5")
    held = [await asyncio.open_connection(*_address(write)) for _ in range(5)]
    try:
        async with connection(write) as (reader, _writer):
            status, answer = await _status_of(reader)
        assert status == 503, answer[:200]
        assert b"retry-after: 1" in answer.lower()
    finally:
        for _, writer in held:
            writer.close()


def _message(size: int) -> bytes:
    """A valid message of exactly ``size`` bytes: JSON takes any number of spaces between its tokens."""
    start = b'{"body": "' + "\u00fc".encode() * 2000 + b'"'  # 4,000 bytes of text
    return start + b" " * (size - len(start) - 1) + b"}"


def _post(service: Service, body: bytes = BODY, head_size: int = 0) -> bytes:
    """A message's request; with ``head_size``, a head of exactly that many bytes (to its CRLF CRLF)."""
    head = _head(service, length=len(body))
    if head_size:
        head += b"x-pad: " + b"p" * (head_size - len(head) - len(b"x-pad: \r\n\r\n")) + b"\r\n"
    return head + b"\r\n" + body


async def _answers(reader: asyncio.StreamReader, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        status, answer = await _whole_response(reader)
        if status not in (200, 202, 413, 431):
            raise AssertionError(answer[:300])
        statuses.append(status)
    return statuses


async def _no_errors(service: Service) -> None:
    """The service stops cleanly, having logged no error (uvicorn logs a write after our answer's end).

    Stopped first: every task the requests started has ended by then, and written its log.
    uvicorn ends a graceful shutdown by raising the signal it caught again.
    """
    assert await asyncio.to_thread(service.stop) == -signal.SIGTERM
    lines = [line for line in service.output().splitlines() if line.startswith("{")]
    errors = [line for line in lines if orjson.loads(line).get("level") in ("error", "critical")]
    assert not errors, "\n".join(errors)[:3000]


async def _in_one_write(write: Service, size: int) -> None:
    """A message of ``size`` bytes, head and body in one write; then one more on the connection."""
    request = _post(write, _message(size))
    async with connection(write) as (reader, writer):
        writer.write(request)
        assert await _answers(reader, 1) == [202 if size <= MAX_BODY else 413], f"{size} bytes"
        writer.write(_post(write))
        assert await _answers(reader, 1) == [202], f"after {size} bytes"


async def _pipelined(write: Service, count: int = 60) -> None:
    """``count`` requests in one write, health checks and messages by turns: each answered, in order."""
    health = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 200 + b"\r\n\r\n"
    data = b"".join(health if n % 2 else _post(write) for n in range(count))
    assert len(data) > MAX_HEAD
    async with connection(write) as (reader, writer):
        writer.write(data)
        assert await _answers(reader, count) == [202, 200] * (count // 2)


async def _at_the_limit(write: Service, dribbled: bool) -> None:
    """A head of exactly the limit is read; one byte more is 431, and the connection ends there."""
    for head_size, expected in ((MAX_HEAD, 202), (MAX_HEAD + 1, 431)):
        request = _post(write, _message(MAX_HEAD), head_size=head_size)
        assert request.index(b"\r\n\r\n") + 4 == head_size
        async with connection(write) as (reader, writer):
            step = 1000 if dribbled else len(request)
            with contextlib.suppress(ConnectionError):  # the server may have answered and closed
                for start in range(0, len(request), step):
                    writer.write(request[start : start + step])
                    await writer.drain()
            assert await _answers(reader, 1) == [expected], f"a head of {head_size} bytes"
            if expected == 431:
                assert await asyncio.wait_for(reader.read(), 30) == b""


async def _refused_after_the_answers_before_it(write: Service) -> None:
    """Five messages and a head too large, in one write: five answers, then 431, then the end."""
    async with connection(write) as (reader, writer):
        writer.write(b"".join(_post(write) for _ in range(5)) + _post(write, head_size=MAX_HEAD + 4000))
        assert await _answers(reader, 6) == [202] * 5 + [431]
        assert await asyncio.wait_for(reader.read(), 30) == b""


# Around the head's limit (this body and its head are over it together), and the body's.
SIZES = [MAX_HEAD - 100, MAX_HEAD, 20_000, MAX_BODY, MAX_BODY + 1, 100_000]


@pytest.mark.parametrize("size", SIZES)
async def test_a_message_with_its_head_in_one_write_is_202_up_to_the_body_limit_then_413(
    sqlite_services: Services, size: int
) -> None:
    write = await sqlite_services.write_api()
    await _in_one_write(write, size)
    await _no_errors(write)


async def test_sixty_requests_pipelined_in_one_write_are_all_answered_in_order(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    await _pipelined(write)
    await _no_errors(write)


@pytest.mark.parametrize("dribbled", [False, True], ids=["in one write", "dribbled"])
async def test_a_head_at_the_limit_is_read_and_one_byte_more_is_431(
    sqlite_services: Services, dribbled: bool
) -> None:
    write = await sqlite_services.write_api()
    await _at_the_limit(write, dribbled)
    await _no_errors(write)


async def test_a_431_comes_after_the_answers_to_the_requests_pipelined_before_it(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    await _refused_after_the_answers_before_it(write)
    await _no_errors(write)


async def test_all_of_it_at_once_on_many_connections(sqlite_services: Services) -> None:
    write = await sqlite_services.write_api()
    for _ in range(3):
        await asyncio.gather(
            *(_in_one_write(write, size) for size in SIZES),
            *(_pipelined(write) for _ in range(4)),
            _at_the_limit(write, dribbled=False),
            _at_the_limit(write, dribbled=True),
            *(_refused_after_the_answers_before_it(write) for _ in range(4)),
        )
    await _no_errors(write)
