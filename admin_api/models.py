"""The admin API's answers, as its OpenAPI document states them.

The routes answer with plain dicts (``admin_api.operations``, ``webhooks.catalog.shown``,
``admin_api.replay``), never through these models: they describe, and cost nothing
per request. An endpoint is shown as its record holds it, so fields a record
written by an older version lacks are optional here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain import EventType
from webhooks.endpoints import RetryPolicy

Fingerprint = Annotated[
    str, Field(pattern=r"^sha256:[0-9a-f]{16}$", description="`sha256:` and 16 hex digits of its hash.")
]


class SecretShown(BaseModel):
    fingerprint: Fingerprint


class OldSecretShown(BaseModel):
    fingerprint: Fingerprint
    until: datetime = Field(description="It signs beside the current secret until then.")


class EndpointView(BaseModel):
    """An endpoint's definition, without its secrets (shown by fingerprint) and its URL's credentials or
    query (either may hold a secret)."""

    # Fields a newer version added are kept in the record and shown.
    model_config = ConfigDict(extra="allow")

    name: str
    url: str = Field(description="Without credentials or query: `?…` stands for a query.")
    url_fingerprint: Fingerprint
    event_types: list[EventType]
    timeout: float | None = None
    retry: RetryPolicy | None = None
    max_in_flight: int | None = None
    buffer: int | None = None
    on_failure: Literal["dead-letter", "block"] | None = None
    since: datetime | None = None
    disable_after_seconds: float | None = None
    version: int = Field(ge=1, description="One more per change.")
    added_at: datetime
    updated_at: datetime
    secret: SecretShown
    old_secrets: list[OldSecretShown] = Field(description="Replaced secrets still signing (a rotation).")
    paused: bool


class EndpointList(BaseModel):
    items: list[EndpointView] = Field(description="By name.")


class Resealed(BaseModel):
    resealed: list[str] = Field(description="The endpoints whose secrets were sealed again.")


class PartitionStatus(BaseModel):
    partition: int = Field(ge=0)
    committed: int | None = Field(description="The group's committed offset; null if none.")
    end: int = Field(ge=0, description="The log's end.")
    lag: int | None = Field(ge=0, description="Records not delivered yet; null without a committed offset.")


class Disabled(BaseModel):
    at: datetime | None
    reason: str | None
    instance: str | None = Field(description="The forwarder that disabled it.")


class BlockedRoom(BaseModel):
    room_id: str
    event_id: UUID | None = Field(description="The room's head event, which failed.")
    partition: int | None
    offset: int | None
    attempts: int = Field(ge=0)
    last_error: str | None
    since: datetime | None


class Rates(BaseModel):
    delivered_per_s: float
    failed_per_s: float
    instances: list[str] = Field(description="The forwarders that reported in the last 30 s.")


class EndpointStatus(BaseModel):
    endpoint: str
    group: str = Field(description="The consumer group of the endpoint's flow.")
    paused: bool
    disabled: Disabled | None = Field(description="When and why a forwarder disabled it; null if it did not.")
    lag: int = Field(ge=0)
    oldest_undelivered_age_seconds: float | None = Field(
        description="The age of the record at the committed offset; null when nothing waits."
    )
    partitions: list[PartitionStatus]
    blocked_rooms: list[BlockedRoom]
    rates: Rates


class Paused(BaseModel):
    endpoint: str
    paused: bool


class Rewound(BaseModel):
    endpoint: str
    offsets: dict[str, int] = Field(description="Where the group now starts, by partition.")
    previous: dict[str, int | None] = Field(
        description="Its committed offsets before, by partition; null where it had none."
    )
    paused: bool = Field(description="Whether it was paused before (and stays paused).")


class Unblocked(BaseModel):
    endpoint: str
    room_id: str
    event_id: str
    action: Literal["retry", "skip"]
    done: bool = Field(description="Carried out by the forwarder holding the room (200), or not yet (202).")


class ReplayFailure(BaseModel):
    event_id: str
    room_id: str
    reason: str


class NotReplayable(BaseModel):
    partition: int
    offset: int
    room_id: str
    stage: str = Field(description="Where it was dead-lettered: `decode` or `store`.")
    reason: str


class Replayed(BaseModel):
    endpoint: str
    matched: int = Field(ge=0, description="Delivery dead letters found, each event once.")
    delivered: list[str] = Field(description="The event ids delivered again.")
    failed: list[ReplayFailure] = Field(description="The first failure of each room; its later events wait.")
    refused: list[NotReplayable]
    more: bool = Field(description="More were found than one call replays.")
