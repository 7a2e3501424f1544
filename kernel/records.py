"""A Kafka record as merlin reads it: confluent-kafka's ``Message`` is one, and so are the tests' fakes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from confluent_kafka import Consumer, Message

Header = str | bytes | None


class RawRecord(Protocol):
    """A record as the log holds it (confluent-kafka's ``Message`` is one)."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> Sequence[tuple[str, Header]] | Mapping[str, Header] | None: ...

    def timestamp(self) -> tuple[int, int]:
        """The timestamp's type and the timestamp (ms since the epoch; not above 0 when there is none)."""
        ...


def arrived(consumer: Consumer, max_records: int, timeout: float) -> list[Message]:
    """What ``consumer`` has: waits up to ``timeout`` s for the first record only, then takes what
    is already fetched, up to ``max_records``. (``consume()`` alone waits until it has
    ``max_records`` or the timeout passes, so a quiet topic would add the whole timeout.)"""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *(consumer.consume(max_records - 1, 0) if max_records > 1 else [])]
