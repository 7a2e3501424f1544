"""The HTTP edge no client can stall: limits and timeouts in uvicorn's own protocol, before any app code.

uvicorn (with httptools) bounds neither a request's head nor the time a client
takes to send it, and a connection that says nothing holds its socket for ever.
``guarded_protocol`` returns uvicorn's httptools protocol with, per connection:

- a cap on the head's bytes (request line and headers) and on the number of
  headers: past either, ``431`` and the connection is closed; the bytes are
  counted as they arrive, so a huge header costs a buffer's worth of memory,
  not its size;
- a deadline for the head (from the connection or from the end of the previous
  response) and one for the body: past it, ``408`` and close; a connection that
  sent nothing is just closed;
- a cap on open connections per process: past it, ``503`` with ``Retry-After``
  and close, at once.

Answers are problem+json, like every other error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kernel.http.responses import PROBLEM_TYPE_BASE


class EdgeSettings(BaseSettings):
    """Limits of every API's HTTP listener (``MERLIN_HTTP_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_HTTP_", extra="ignore")

    max_head_bytes: int = Field(default=16 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=8)
    head_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=2048, ge=1)
    retry_after_seconds: int = Field(default=1, ge=1)


_LINGER_SECONDS = 2.0
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


def _problem(
    status: int, kind: str, title: str, extra_headers: tuple[tuple[bytes, bytes], ...] = ()
) -> bytes:
    body = orjson.dumps({"type": PROBLEM_TYPE_BASE + kind, "title": title, "status": status})
    head = [
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
        b"content-type: application/problem+json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n",
        *(name + b": " + value + b"\r\n" for name, value in extra_headers),
        b"\r\n",
    ]
    return b"".join(head) + body


@dataclass(frozen=True)
class _Answers:
    too_large: bytes
    too_slow: bytes
    too_many: bytes


def guarded_protocol(settings: EdgeSettings) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``settings``' limits (pass it as ``Config(http=...)``)."""
    answers = _Answers(
        _problem(431, "headers-too-large", "The request's head is too large."),
        _problem(408, "request-timeout", "The request took too long to arrive."),
        _problem(503, "too-many-connections", "Too many connections; retry shortly.",
                 ((b"retry-after", str(settings.retry_after_seconds).encode()),)),
    )  # fmt: skip

    class GuardedProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0
            self._head_count = 0
            self._in_head = True  # from the connection or the previous response until headers complete
            self._timer: asyncio.TimerHandle | None = None
            self._refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > settings.max_connections:
                self._refuse(answers.too_many)
                return
            self._arm(settings.head_timeout_seconds)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_head and self._timer is None:  # the next request on a kept-alive connection
                self._arm(settings.head_timeout_seconds)
            # Counted only when the whole piece fell in a head: one that ends a body (and with it
            # the request) is body, however large.
            was_in_head = self._in_head
            super().data_received(data)
            if was_in_head and self._in_head and not self._refused:
                self._head_bytes += len(data)
                if self._head_bytes > settings.max_head_bytes:
                    self._refuse(answers.too_large)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = self._head_count = 0
            self._in_head = True

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_count += 1
            if self._head_count > settings.max_headers:
                self._refuse(answers.too_large)
                return
            super().on_header(name, value)

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_headers_complete(self) -> None:
            if self._refused:
                return
            self._in_head = False
            self._arm(settings.body_timeout_seconds)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            # What comes next is the next request's head. Not when the response completes: an
            # early answer (413) may leave the body still arriving, and it is no head.
            self._in_head = True
            if not self._refused:
                super().on_message_complete()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._timed_out)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            started = self._head_bytes > 0 or not self._in_head
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()  # too late for an answer of ours
            elif started:
                self._refuse(answers.too_slow)
            else:
                self.transport.close()  # it never said anything: nothing to answer

        def _refuse(self, answer: bytes) -> None:
            self._refused = True
            self._disarm()
            if self.cycle is not None:
                self.cycle.response_complete = True  # the app must not answer as well
            if self.transport.is_closing():
                return
            self.transport.write(answer)
            # A close with unread bytes would reset the connection, and the client might never see
            # the answer: send it, end our side, discard what still comes, then close.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    return GuardedProtocol
