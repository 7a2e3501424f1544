"""The opaque ``position`` of a write: where its event sits in the log."""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.errors import InvalidCommand

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
