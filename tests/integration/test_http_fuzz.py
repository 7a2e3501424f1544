"""Schemathesis fuzzes every API from its own OpenAPI document: no input may cause a 500, and every
answer is one the document states (its status, media type and schema: a typed answer that lies fails).

Each API twice: as schemathesis sends (``requests`` writes a head, then its body), and
through a proxy of ours that hands each request on in one write, head and body together,
as many clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kernel.auth import SCOPES
from merlin.local.service_processes import Service, Services

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)


@dataclass
class OneWriteProxy:
    """An HTTP proxy that reads each request whole and hands it to ``target`` in one write."""

    target: tuple[str, int]
    handed_on: int = 0
    refused: list[bytes] = field(default_factory=list)  # heads it cannot frame by their length
    _connections: set[asyncio.Task[None]] = field(default_factory=set)

    async def serve(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        connection = asyncio.current_task()
        assert connection is not None
        self._connections.add(connection)
        upstream, to_upstream = await asyncio.open_connection(*self.target)
        answers = asyncio.create_task(_copy(upstream, to_client))
        try:
            while head := await _head(client):
                request_line, _, fields = head.partition(b"\r\n")
                method, url, version = request_line.split(b" ")
                parts = urlsplit(url)  # a proxy is sent the absolute form
                path = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
                headers = [line.split(b":", 1) for line in fields.split(b"\r\n") if b":" in line]
                names = {name.strip().lower(): value.strip() for name, value in headers}
                if b"transfer-encoding" in names:
                    self.refused.append(head)
                    break
                body = await client.readexactly(int(names.get(b"content-length", b"0")))
                to_upstream.write(b"%s %s %s\r\n" % (method, path, version) + fields + body)
                await to_upstream.drain()
                self.handed_on += 1
        finally:
            to_upstream.close()
            with contextlib.suppress(ConnectionError):
                await answers
            to_client.close()
            self._connections.discard(connection)

    async def finished(self) -> None:
        """Every connection's end (the client's leaving ends them all)."""
        await asyncio.wait_for(asyncio.gather(*self._connections, return_exceptions=True), 30)


async def _head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:  # the client closed the connection between requests
        return b""


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def one_write_proxy(service: Service) -> AsyncIterator[tuple[OneWriteProxy, str]]:
    parts = urlsplit(service.url or "")
    proxy = OneWriteProxy((parts.hostname or "127.0.0.1", parts.port or 80))
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield proxy, f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()
        await proxy.finished()


async def _service(services: Services, api: str) -> Service:
    if api == "write":
        return await services.write_api()
    if api == "admin":
        return await services.admin_api()
    services.forwarder()
    return await services.read_api(MERLIN_READ_API_POSITION_WAIT_SECONDS="0.2")


# The live streams answer a body that ends only with its token: a generated request that is accepted
# would hold the run for an hour. Their refusals and streams are tested in test_live_rooms.
_STREAMS = ("--exclude-operation-id", "streamRoom", "--exclude-operation-id", "streamRooms")


async def _fuzz(service: Service, token: str, *options: str) -> str:
    run = await asyncio.create_subprocess_exec(
        SCHEMATHESIS, "run", f"{service.url}/openapi.json", "--header", f"Authorization: Bearer {token}",
        "--checks", CHECKS,
        "--max-examples", "40", "--generation-deterministic", "--no-color", *_STREAMS, *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(run.communicate(), 300))[0].decode()
    assert run.returncode == 0, output[-6000:]
    assert " passed" in output
    return output


@pytest.mark.parametrize("api", ["write", "read", "admin"])
async def test_no_generated_request_gets_a_server_error(sqlite_services: Services, api: str) -> None:
    service = await _service(sqlite_services, api)
    # Authenticated as a caller with every scope: the fuzzing reaches the routes, not the 401.
    await _fuzz(service, sqlite_services.token(scopes=SCOPES))


@pytest.mark.parametrize("api", ["write", "read", "admin"])
async def test_no_generated_request_in_one_write_gets_a_server_error(
    sqlite_services: Services, api: str
) -> None:
    service = await _service(sqlite_services, api)
    async with one_write_proxy(service) as (proxy, address):
        await _fuzz(service, sqlite_services.token(scopes=SCOPES), "--proxy", address)
    assert proxy.handed_on > 0  # schemathesis went through the proxy
    assert not proxy.refused, proxy.refused[0][:300]
