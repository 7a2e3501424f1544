"""Request and response bodies of the write API."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from domain.model import ID_PATTERN, MAX_BODY_CHARS, MAX_ID_CHARS, MAX_VERSION

SenderId = Annotated[StrictStr, Field(pattern=ID_PATTERN, min_length=1, max_length=MAX_ID_CHARS)]
Body = Annotated[StrictStr, Field(min_length=1, max_length=MAX_BODY_CHARS)]


class CreateMessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sender_id: SenderId | None = Field(
        default=None,
        description="Optional: the sender is the caller (the token's `sub`); if sent, it must be.",
        examples=["u1"],
    )
    body: Body = Field(description="The text, 1 to 4000 characters, not only white space.")
    message_id: UUID | None = Field(
        default=None,
        description="A client-chosen id: retries with the same id make one message.",
        json_schema_extra={"format": "uuid"},
    )


class UpdateMessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sender_id: SenderId | None = Field(
        default=None, description="Optional: the caller is the editor, and must be the original sender."
    )
    body: Body = Field(description="The new text.")
    expected_version: StrictInt | None = Field(
        default=None, ge=1, le=MAX_VERSION, description="Apply only if the message is at this version."
    )


class Accepted(BaseModel):
    message_id: UUID
    event_id: UUID
    position: str = Field(description="Opaque; pass as after_position to read your write.")


class UpdateAccepted(BaseModel):
    event_id: UUID
    position: str
