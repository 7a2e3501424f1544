"""The read API's answers, as its OpenAPI document states them.

The routes answer with the reader's rows as they are (``read_store.reader``), encoded
by orjson, never through these models: they describe, and cost nothing per request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, RootModel

from domain import EventType

Position = Annotated[
    str,
    Field(
        pattern=r"^\d{1,9}-\d{1,19}$",
        description="Where the event is in the event log; pass it as `after_position` to read past it.",
    ),
]


class Message(BaseModel):
    message_id: UUID
    room_id: str
    sender_id: str = Field(description="Who sent it (the token's `sub` of the write).")
    body: str
    version: int = Field(ge=1, description="1 when created, one more per applied edit.")
    seq: int = Field(ge=1, description="Its place among the room's messages, gap-free, in order of creation.")
    created_at: datetime
    updated_at: datetime


class MessagePage(BaseModel):
    items: list[Message] = Field(description="In `seq` order.")
    next: str | None = Field(
        description="The relative URL of the following page when this one is full, else null."
    )


class PendingEvent(BaseModel):
    """The projection has not seen the event (an id never written reads the same)."""

    event_id: UUID
    status: Literal["pending"]


class _Seen(BaseModel):
    event_id: UUID
    event_type: EventType
    room_id: str
    message_id: UUID
    position: Position
    recorded_at: datetime = Field(description="When the projection recorded its outcome.")


class AppliedEvent(_Seen):
    """The projection applied the event."""

    status: Literal["applied"]
    version: int = Field(ge=1, description="The message's version the event made (or found, if a duplicate).")
    duplicate: Literal[True] | None = Field(
        default=None, description="Present for a repeated create: the message was there already."
    )


class Rejection(BaseModel):
    code: Literal["conflict", "not_found", "forbidden", "version_conflict", "store_refused"]
    reason: str


class RejectedEvent(_Seen):
    """The projection recorded the event and did not apply it."""

    status: Literal["rejected"]
    rejection: Rejection


class EventOutcome(
    RootModel[Annotated[PendingEvent | AppliedEvent | RejectedEvent, Field(discriminator="status")]]
):
    """The projection's outcome of one event, by its `status`."""


class PartitionProgress(BaseModel):
    partition: int = Field(ge=0)
    applied_offset: int = Field(ge=-1, description="The last offset applied; -1 for none yet.")
    end_offset: int | None = Field(description="The log's end; null when the broker did not answer.")
    lag: int | None = Field(ge=0, description="Records not applied yet; null when the end is not known.")


class Projection(BaseModel):
    topic: str
    partitions: list[PartitionProgress]
    lag: int | None = Field(
        ge=0, description="The sum over the partitions; null when the ends are not known."
    )
