"""Calls to endpoints over HTTP/1.1: connections kept alive per origin, answers parsed by httptools.

A delivery needs little of a general HTTP client: one POST, the answer's status
and ``Retry-After``, a body read up to a cap and thrown away; no redirects,
cookies, proxies or compression. aiohttp's client cost about 55 µs of CPU per
call with a hundred in flight, and this one, on the parser uvicorn serves with,
about 14 µs: delivery is the forwarder's hottest loop (decision 0013).

What it keeps of a general client: TLS with the system's trust store and the
host name checked; every address a name resolves to checked on each new
connection, inner ones only in the networks allowed (``url_safety``); one timeout over
the whole call (resolving, connecting, sending, answering); answers read to
their end before a connection is used again, or the connection closed; a call
on a kept connection that closes before any byte of an answer made once more on
a new one (most likely the server had closed it while idle; if the endpoint did
get the first, the second carries the same idempotency key); idle connections
closed after ``keepalive`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import unquote, urlsplit

import httptools

from domain.errors import MerlinError
from webhooks.url_safety import NO_INNER_NETWORKS, AllowedNetworks, UnsafeAddress, addresses

# What is read of an endpoint's answer: its status and headers are what count; a body past this
# is not read (the connection is closed rather than drained into memory).
ANSWER_BODY_CAP = 64 * 1024
ANSWER_HEAD_CAP = 64 * 1024
USER_AGENT = "merlin-webhooks"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: str | None = None  # the Retry-After header, as sent


class CallFailed(MerlinError):
    """The call got no answer: refused, reset, or (``timed_out``) too slow."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


class Send(Protocol):
    async def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer: ...


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's calls go, and the part of each request that never changes."""

    tls: bool
    host: str  # a name, or an address without brackets
    port: int
    head: bytes  # request line, Host, User-Agent and (from the URL's credentials) Authorization

    @property
    def origin(self) -> tuple[bool, str, int]:
        return self.tls, self.host, self.port


@functools.lru_cache(maxsize=1024)
def target(url: str) -> Target:
    """``url`` (http or https, as an endpoint's definition holds it) taken apart for calls."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {parts.scheme}://{parts.hostname or ''}")
    tls = parts.scheme == "https"
    default = 443 if tls else 80
    port = parts.port or default
    host = parts.hostname
    shown_host = f"[{host}]" if ":" in host else host
    lines = [
        f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
        f"Host: {shown_host}{'' if port == default else f':{port}'}",
        f"User-Agent: {USER_AGENT}",
    ]
    if parts.username is not None:  # as aiohttp did: a URL's credentials become Basic authorization
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        lines.append(f"Authorization: Basic {base64.b64encode(pair).decode()}")
    return Target(tls, host, port, ("\r\n".join(lines) + "\r\n").encode("latin-1"))


def request(head: bytes, body: bytes, headers: dict[str, str]) -> bytes:
    """The whole request: ``head``, ``headers``, the length and ``body``."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if extra.count("\n") != len(headers) or extra.count("\r") != len(headers):
        raise ValueError("a header name or value holds a line break")
    return b"".join((head, extra.encode("latin-1"), b"Content-Length: %d\r\n\r\n" % len(body), body))


def _oversized() -> CallFailed:
    return CallFailed(f"answer's head longer than {ANSWER_HEAD_CAP} bytes")


class _Stale(Exception):
    """The connection closed before any byte of an answer: the call may be made again elsewhere."""


class _Connection(asyncio.Protocol):
    """One connection to an origin: one call at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keep = False  # whether the last answer left the connection fit to use again
        self._answer: asyncio.Future[Answer] | None = None
        self._heard = 0  # bytes read while the current answer's head was not complete
        self._head_bytes = 0  # of its headers' names and values
        self._head_done = False
        self._body = 0
        self._status = 0
        self._retry_after: str | None = None

    def ask(self, data: bytes) -> asyncio.Future[Answer]:
        """Send one request; the future is its answer (or _Stale, or CallFailed)."""
        assert self.transport is not None
        answer = self._answer = asyncio.get_running_loop().create_future()
        self._heard, self._head_bytes, self._head_done, self._body, self._status = 0, 0, False, 0, 0
        self._retry_after, self.keep = None, False
        if self.closed or self.transport.is_closing():
            answer.set_exception(_Stale("connection closed"))
        else:
            self.transport.write(data)
        return answer

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # bytes nobody asked for: the connection is not to be trusted again
            return
        if not self._head_done:
            self._heard += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._done(keep=False)  # 101 Switching Protocols: an answer, but the connection is gone
        except httptools.HttpParserError as exc:
            self._fail(CallFailed(f"malformed answer: {exc}"))
        if not self._head_done and self._heard > ANSWER_HEAD_CAP:
            self._fail(_oversized())
        if self._answer.done() and not self.keep:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is None or self._answer.done():
            return
        if self._head_done:
            self._done(keep=False)  # an answer whose body ends with the connection
        elif self._heard:
            self._fail(CallFailed("connection closed in the middle of an answer"))
        else:
            reason = (
                f"connection closed before an answer: {exc}" if exc else "connection closed before an answer"
            )
            self._fail(_Stale(reason))

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answer is None or self._answer.done():
            self.keep = False  # more than the one answer asked for: not to be used again
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._status = self._parser.get_status_code()
        if self._head_bytes > ANSWER_HEAD_CAP:  # all of it came in one read
            self._fail(_oversized())

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > ANSWER_BODY_CAP:
            self._done(keep=False)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer (100 Continue, 103): the final one follows
            self._heard, self._head_bytes, self._head_done, self._status = 0, 0, False, 0
            self._retry_after = None
            return
        self._done(keep=self._parser.should_keep_alive())

    # -- settling the answer --------------------------------------------------------------------

    def _done(self, keep: bool) -> None:
        if self._answer is not None and not self._answer.done():
            self.keep = keep and not self.closed
            self._answer.set_result(Answer(self._status, self._retry_after))

    def _fail(self, failure: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self.keep = False
            self._answer.set_exception(failure)
        self.close()


class HttpSend:
    """POSTs over kept-alive HTTP/1.1 connections; to inner addresses only in the networks ``allowed``."""

    def __init__(
        self,
        connections: int = 0,
        allowed: AllowedNetworks = NO_INNER_NETWORKS,
        tls: ssl.SSLContext | None = None,
        keepalive: float = 15.0,
    ) -> None:
        # Each endpoint's dispatcher bounds its own calls in flight; 0 here means no other bound.
        self._limit = asyncio.Semaphore(connections) if connections else None
        self._allowed = allowed
        self._tls = tls or ssl.create_default_context()
        self._keepalive = keepalive
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._swept = time.monotonic()
        self._closed = False

    async def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        way = target(url)
        data = request(way.head, body, headers)
        try:
            async with asyncio.timeout(timeout):
                if self._limit is None:
                    return await self._call(way, data)
                async with self._limit:
                    return await self._call(way, data)
        except TimeoutError:
            raise CallFailed(f"timeout after {timeout:g} s", timed_out=True) from None

    async def _call(self, way: Target, data: bytes) -> Answer:
        kept = self._kept(way.origin)
        if kept is not None:
            try:
                return await self._exchange(kept, way, data)
            except _Stale:
                pass  # most likely closed by the server while idle: once more, on a new connection
        try:
            return await self._exchange(await self._connect(way), way, data)
        except _Stale as exc:
            raise CallFailed(str(exc)) from None

    async def _exchange(self, connection: _Connection, way: Target, data: bytes) -> Answer:
        try:
            answer = await connection.ask(data)
        except BaseException:  # a failure, or the call's timeout: its answer may still come
            connection.close()
            raise
        if connection.keep and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(way.origin, []).append(connection)
            self._sweep(connection.idle_since)
        else:
            connection.close()
        return answer

    def _kept(self, origin: tuple[bool, str, int]) -> _Connection | None:
        """The most recently used idle connection to ``origin`` still open, if any."""
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if self._fresh(connection, now):
                return connection
            connection.close()
        return None

    def _fresh(self, connection: _Connection, now: float) -> bool:
        return not connection.closed and now - connection.idle_since < self._keepalive

    def _sweep(self, now: float) -> None:
        """Close connections idle longer than ``keepalive`` (an endpoint gone leaves some behind)."""
        if now - self._swept < self._keepalive:
            return
        self._swept = now
        for origin, idle in list(self._idle.items()):
            fresh = []
            for connection in idle:
                if self._fresh(connection, now):
                    fresh.append(connection)
                else:
                    connection.close()
            if fresh:
                self._idle[origin] = fresh
            else:
                del self._idle[origin]

    async def _connect(self, way: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            found = await addresses(way.host, way.port, self._allowed)
        except UnsafeAddress as exc:
            raise CallFailed(f"refused: {exc}") from None
        except OSError as exc:
            raise CallFailed(f"cannot resolve {way.host}: {exc.strerror or exc}") from None
        factory: Callable[[], _Connection] = _Connection
        failures: list[str] = []
        for family, address in found:
            try:
                _, connection = await loop.create_connection(
                    factory, address, way.port, family=family,
                    ssl=self._tls if way.tls else None, server_hostname=way.host if way.tls else None,
                )  # fmt: skip
            except OSError as exc:
                failures.append(f"{address}: {exc.strerror or exc}")
                continue
            return connection
        raise CallFailed(f"cannot connect to {way.host}:{way.port} ({'; '.join(failures)})")

    async def close(self) -> None:
        """Close every idle connection; those in use close when their call ends."""
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
