"""Settings of the write API (``MERLIN_WRITE_API_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.settings import ApiServing, CorsServing


class WriteApiSettings(ApiServing, CorsServing, BaseSettings):
    """The write API (``MERLIN_WRITE_API_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_WRITE_API_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Where the write API listens.")
    port: int = Field(default=8081, ge=0, le=65535, description="The write API's port.")
    metrics_port: int = Field(
        default=9103, ge=0, le=65535, description="Their port; 0 turns that listener off."
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=256, description="A larger request body is `413`.")
    delivery_timeout_ms: int = Field(
        default=20_000,
        ge=100,
        description="How long a write may wait for the broker before the client gets `503`. Longer than a "
        "dead broker takes to be fenced (the brokers' `broker.session.timeout.ms`, 9 s) plus a leader "
        "election, so a broker crash delays writes instead of failing them.",
    )
    linger_ms: float = Field(
        default=1.0,
        ge=0,
        description="How long the producer gathers writes into one batch (librdkafka's `linger.ms`).",
    )
    queue_max_messages: int = Field(
        default=100_000,
        ge=1,
        description="Most writes waiting in the producer for the broker; past it, `503` "
        "(librdkafka's `queue.buffering.max.messages`).",
    )
    retry_after_seconds: int = Field(
        default=2, ge=1, description="The `Retry-After` of the write API's `503`s (the broker unavailable)."
    )
