"""The HTTP edge, on the real write API over raw sockets: big heads, slow clients, silent connections."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from merlin.local.service_processes import Service, Services

BODY = b'{"body": "hi"}'


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


def _head(service: Service, extra: bytes = b"") -> bytes:
    token = service.headers["Authorization"].encode()
    return (
        b"POST /v1/rooms/r1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: " + token + b"\r\ncontent-length: %d\r\n" % len(BODY) + extra
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


async def test_too_many_headers_are_431(sqlite_services: Services) -> None:
    write = await sqlite_services.write_api()
    many = b"".join(b"x-h%d: v\r\n" % n for n in range(150))
    async with connection(write) as (reader, writer):
        writer.write(_head(write, many) + b"\r\n" + BODY)
        status, _ = await _status_of(reader)
    assert status == 431


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
