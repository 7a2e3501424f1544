"""A Kafka record as merlin reads it: confluent-kafka's ``Message`` is one, and so are the tests' fakes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

Header = str | bytes | None


class RawRecord(Protocol):
    """A record as the log holds it (confluent-kafka's ``Message`` is one)."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> Sequence[tuple[str, Header]] | Mapping[str, Header] | None: ...
