"""Settings of the read API (``MERLIN_READ_API_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.settings import ApiServing


class ReadApiSettings(ApiServing, BaseSettings):
    """The read API (``MERLIN_READ_API_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_READ_API_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Where the read API listens.")
    port: int = Field(default=8082, ge=0, le=65535, description="The read API's port.")
    metrics_port: int = Field(
        default=9104, ge=0, le=65535, description="Their port; 0 turns that listener off."
    )
    position_wait_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="How long a read with `after_position` waits for the projection to catch up before "
        "`503`.",
    )
    max_position_waiters: int = Field(
        default=1000,
        ge=1,
        description="Most reads waiting on `after_position` at once; past it, `503` with `Retry-After` at "
        "once (not a queue).",
    )
    max_position_waiters_per_caller: int = Field(
        default=100,
        ge=1,
        description="Most reads of one caller (the token's `sub`) waiting at once, within the bound above; "
        "past it, `429` with `Retry-After`, so that no caller takes the others' places.",
    )
    max_page_size: int = Field(
        default=200, ge=1, description="Most messages one page holds, whatever `limit` asks."
    )
    default_page_size: int = Field(
        default=50, ge=1, description="Messages in a page when `limit` is not given."
    )
    live_max_streams: int = Field(
        default=1000,
        ge=1,
        description="Most live streams (`/v1/rooms/{room_id}/live`, `/v1/live`) open at once in a process; "
        "past it, `503` with `Retry-After`.",
    )
    live_max_rooms: int = Field(
        default=50, ge=1, le=1000, description="Most rooms one stream of `/v1/live?rooms=` follows."
    )
    live_buffer: int = Field(
        default=256,
        ge=1,
        description="Changes buffered for one live stream; a stream that falls that far behind is closed "
        "(after an event telling it to resume from its last id), never buffered further.",
    )
    live_heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="A comment line sent on a quiet live stream this often, so that proxies keep it open "
        "and a client can tell a quiet room from a dead connection.",
    )
    live_send_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A live stream whose client takes no data for this long is closed.",
    )
    live_ticket_seconds: int = Field(
        default=30,
        ge=5,
        le=300,
        description="How long a ticket of `POST /v1/live/tickets` may be used (once) to open a stream.",
    )
    live_ticket_key: SecretStr | None = Field(
        default=None,
        description="Signs live tickets, the same in every read API process; unset, a key derived from "
        "`MERLIN_AUTH_JWT_SECRET`, or without it one of each process's own (a ticket then opens a stream "
        "only at the process that issued it).",
    )
    live_batch: int = Field(
        default=1000,
        ge=1,
        description="Records the live feed (and a stream's replay) reads from the events topic at a time.",
    )
