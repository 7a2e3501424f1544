"""Path and query parameters shared by both APIs, with the limits the OpenAPI document states."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from domain.model import ID_PATTERN, MAX_ID_CHARS

RoomId = Annotated[
    str,
    Path(
        description="The room: 1 to 128 letters, digits and . _ : @ -, starting with a letter or digit.",
        pattern=ID_PATTERN,
        min_length=1,
        max_length=MAX_ID_CHARS,
    ),
]
AfterPosition = Annotated[
    str | None,
    Query(
        description="A position from the write API: wait (bounded) until the projection passed it.",
        pattern=r"^\d{1,9}-\d{1,19}$",
    ),
]
