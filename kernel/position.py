"""The opaque ``position`` of a write: where its event sits in the log."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from domain.errors import InvalidCommand

# The partitioners that place a keyed record as ``partition_of`` says: librdkafka's default
# (``consistent_random``) and its keyed half (``consistent``).
CRC32_PARTITIONERS = frozenset({"consistent_random", "consistent"})

# ASCII digits only: int() would also read other scripts' digits ("٣-٣").
_FORMAT = re.compile(r"([0-9]{1,9})-([0-9]{1,19})")


@dataclass(frozen=True, slots=True, order=True)
class Position:
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}-{self.offset}"

    @classmethod
    def parse(cls, text: str, field: str = "after_position") -> Position:
        """The position written as ``text``; InvalidCommand naming ``field`` when it is not one."""
        match = _FORMAT.fullmatch(text)
        if match is None:
            raise InvalidCommand(field, "is not a position returned by the write API")
        return cls(int(match.group(1)), int(match.group(2)))


def partition_of(room_id: str, partitions: int) -> int:
    """The partition of the events topic that holds ``room_id``'s events, of ``partitions``.

    The write API keys each event by its room and leaves partitioning to
    librdkafka's default, which takes the CRC-32 of the key modulo the number of
    partitions: a position on any other partition is not one of the room's.
    """
    return zlib.crc32(room_id.encode()) % partitions
