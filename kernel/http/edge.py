"""The HTTP edge no client can stall: limits and timeouts in uvicorn's own protocol, before any app code.

uvicorn (with httptools) bounds neither a request's head nor the time a client
takes to send it, and a connection that says nothing holds its socket for ever.
``guarded_protocol`` returns uvicorn's httptools protocol with, per connection:

- a cap on the head's bytes (request line and headers) and on the number of
  headers: past either, ``431`` and the connection is closed. What a read brings
  is parsed in pieces that end where a head or a request may end, so exactly the
  head's bytes are counted, never those of a body or of the requests pipelined
  with it; and they are counted before they are parsed, so a huge header costs a
  buffer's worth of memory, not its size;
- a deadline for the head (from the connection, or from the first byte of a
  later request) and one for the body: past it, ``408`` and close; a connection
  that sent nothing is just closed;
- a cap on open connections per process: past it, ``503`` with ``Retry-After``
  and close, at once.

Answers are problem+json, like every other error. One comes after the answers to
the requests before it on its connection (pipelined), in their order, and nothing
comes after it: what follows is not read, and an app already reading the refused
request sees the client gone.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from kernel.http.edge_settings import EdgeSettings
from kernel.http.responses import PROBLEM_TYPE_BASE

_LINGER_SECONDS = 2.0
_BLANK_LINE = b"\r\n\r\n"  # ends a head, and a chunked body
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


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's length as the parser takes it from the head; None when chunked.

    The parser has already refused a head whose length is invalid, repeated or beside a
    ``Transfer-Encoding``.
    """
    length = 0
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
    return length


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
            self._head_bytes = 0  # since the previous request ended: blank lines before a head count too
            self._head_count = 0
            self._in_head = True  # from the connection or the previous request's end until headers complete
            self._body_left: int | None = 0  # None: chunked, its end known only from its framing
            self._last_bytes = b""  # the last three parsed: an end of head may straddle two reads
            self._reading: RequestResponseCycle | None = None  # the request whose body is arriving
            self._unanswered: deque[RequestResponseCycle] = deque()  # handed to the app, in order
            self._held: bytes | None = None  # our answer, until the requests before it have theirs
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
            # Each piece ends at the latest where the head or the request in progress may end, so it
            # is head or not as a whole: a read may hold a head, its body and the requests after it.
            view = memoryview(data)
            start = 0
            while start < len(data) and not self._refused and not self.transport.is_closing():
                if self._in_head:
                    if self._timer is None:  # a later request's first byte
                        self._arm(settings.head_timeout_seconds)
                    budget = settings.max_head_bytes - self._head_bytes
                    size = self._to_end_of_head(data, start, budget)
                    if size > budget:  # refused before the parser buffers any of it
                        self._refuse(answers.too_large)
                        return
                    self._head_bytes += size
                elif self._body_left:
                    size = min(self._body_left, len(data) - start)
                else:  # a chunked body ends with its last chunk's empty line, or its trailers'
                    size = self._to_end_of_head(data, start, len(data) - start)
                piece = view[start : start + size]
                start += size
                self._last_bytes = (self._last_bytes + piece[-3:])[-3:]
                super().data_received(piece)  # type: ignore[arg-type]  # any buffer: a copy costs its size
                if self.transport.get_protocol() is not self:  # upgraded to a WebSocket: no longer ours
                    self._disarm()
                    return

        def _to_end_of_head(self, data: bytes, start: int, within: int) -> int:
            """Bytes from ``start`` to the first CRLF CRLF that ends ``within`` bytes, or to the end."""
            straddling = (self._last_bytes + data[start : start + 3]).find(_BLANK_LINE)
            if straddling >= 0:
                return straddling + len(_BLANK_LINE) - len(self._last_bytes)
            at = data.find(_BLANK_LINE, start, start + within)
            return len(data) - start if at < 0 else at + len(_BLANK_LINE) - start

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._refused:  # the rest of the piece is still parsed: one refusal is enough
                return
            self._head_count += 1  # trailers included: they are held like headers
            if self._head_count > settings.max_headers:
                self._refuse(answers.too_large)
                return
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            if self._refused:
                return
            self._in_head = False
            self._body_left = _declared_length(self.headers)
            self._arm(settings.body_timeout_seconds)
            previous = self.cycle
            super().on_headers_complete()
            if self.cycle is not previous:  # not an upgrade: the app has it, or will after those before
                self._reading = self.cycle
                self._unanswered.append(self.cycle)

        def on_body(self, body: bytes) -> None:
            if self._body_left is not None:
                self._body_left -= len(body)
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self._disarm()
            # What comes next is the next request's head. Not when the response completes: an
            # early answer (413) may leave the body still arriving, and it is no head.
            self._in_head = True
            self._head_bytes = self._head_count = 0
            self._reading = None
            if not self._refused:
                super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._forget_answered()
            if self._held is not None and not self._unanswered:
                answer, self._held = self._held, None
                self._send(answer)

        def _forget_answered(self) -> None:
            while self._unanswered and (
                self._unanswered[0].response_complete or self._unanswered[0].disconnected
            ):
                self._unanswered.popleft()

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
            if self._reading is not None or self._head_bytes > 0:
                self._refuse(answers.too_slow)
            else:
                self.transport.close()  # it never said anything: nothing to answer

        def _refuse(self, answer: bytes) -> None:
            if self._refused:
                return
            self._refused = True
            self._disarm()
            if self._reading is not None:
                if self._reading.response_started:  # the app answers it, or has (413 early): too late
                    self.transport.close()
                    return
                self._drop(self._reading)
            self._forget_answered()
            if self.transport.is_closing():
                return
            if self._unanswered:
                self._held = answer  # answers go in the order of the requests
            else:
                self._send(answer)

        def _drop(self, cycle: RequestResponseCycle) -> None:
            """The refused request: its app, if it started, sees the client gone and answers nowhere."""
            self.pipeline = deque(queued for queued in self.pipeline if queued[0] is not cycle)
            cycle.disconnected = True
            cycle.waiting_for_100_continue = False
            cycle.message_event.set()

        def _send(self, answer: bytes) -> None:
            self._unset_keepalive_if_required()
            if self.transport.is_closing():  # the answer before it closed the connection
                return
            self.transport.write(answer)
            # A close with unread bytes would reset the connection, and the client might never see
            # the answer: send it, end our side, discard what still comes, then close. Nothing may
            # write after the end: no request before this answer is unanswered, none after it is read.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(_LINGER_SECONDS, self.transport.close)

    return GuardedProtocol
