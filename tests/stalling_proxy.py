"""A TCP relay whose established connections can be made to go silent, as when a NAT or firewall on
the way forgets them: the client's bytes still reach the server, the server's answers are dropped, and
neither side sees the connection close. New connections are relayed as usual.

librdkafka waits out its socket timeout (a minute by default) on such a connection before it
reconnects; this is the half-dead subscription the settings topic's self-check is for.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    silent: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class StallingProxy:
    """Relays ``127.0.0.1:port`` to ``upstream`` on the running loop."""

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        self.port = port
        self.upstream = upstream
        self._links: list[_Link] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> StallingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for link in self._links:
            for task in link.tasks:
                task.cancel()
            link.client.close()
            link.server.close()
        await self._server.wait_closed()

    def silence_established(self) -> int:
        """Drop every answer on the connections open now, from now on; how many there were."""
        open_links = [link for link in self._links if not link.client.is_closing()]
        for link in open_links:
            link.silent = True
        return len(open_links)

    async def _accept(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            server_in, server_out = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_out.close()
            return
        link = _Link(client_out, server_out)
        self._links.append(link)
        link.tasks = [
            asyncio.create_task(self._relay(client_in, server_out, link, answers=False)),
            asyncio.create_task(self._relay(server_in, client_out, link, answers=True)),
        ]

    @staticmethod
    async def _relay(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link, *, answers: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await source.read(65536):
                if answers and link.silent:
                    continue  # read and dropped: the server sees its answers leave, the client hears nothing
                sink.write(data)
                await sink.drain()
        if not (answers and link.silent):  # the client is not told: that is the fault
            sink.close()
