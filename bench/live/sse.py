"""Server-Sent Events read from a byte stream that arrives in arbitrary pieces (WHATWG's event stream).

Both servers measured send it, with different line ends: Centrifugo ``\\n``, Starlette's streams
(and so merlin's read API) ``\\r\\n`` by default; the format allows ``\\r`` alone too. A comment
line (``:`` first) is a heartbeat: counted, never an event.
"""

from __future__ import annotations

from dataclasses import dataclass

_COLON = 58  # b":"[0]


@dataclass(frozen=True, slots=True)
class Event:
    data: bytes
    event: str = "message"
    id: str | None = None


class EventStream:
    """Events out of the bytes fed in, each once its blank line has arrived."""

    __slots__ = ("_data", "_event", "_id", "_rest", "comments")

    def __init__(self) -> None:
        self._rest = b""
        self._data: list[bytes] = []
        self._event: str | None = None
        self._id: str | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._rest + chunk
        if b"\r" in buffer:
            # A CR at the very end may be the first half of a CRLF split across two pieces.
            held = buffer.endswith(b"\r")
            if held:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                buffer += b"\r"
        *lines, self._rest = buffer.split(b"\n")
        events: list[Event] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(Event(b"\n".join(self._data), self._event or "message", self._id))
                self._data, self._event, self._id = [], None, None
            elif line[0] == _COLON:
                self.comments += 1
            else:
                self._field(line)
        return events

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode()
        elif name == b"id":
            self._id = value.decode()
        # ``retry`` and unknown fields: nothing a measurement needs.
