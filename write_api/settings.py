"""Settings of the write API (``MERLIN_WRITE_API_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WriteApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERLIN_WRITE_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    # Worker processes sharing the listening socket (`--workers N`), each its own interpreter.
    workers: int = Field(default=1, ge=1, le=64)
    # Prometheus's /metrics, /healthz and /readyz, without a token, on http://metrics_host:metrics_port
    # (with workers, served by their parent for all of them); port 0 turns it off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9103, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=256)
    # How long a write may wait for the broker before the client gets a 503. Longer than a
    # dead broker takes to be fenced (broker.session.timeout.ms, 9 s) plus a leader election,
    # so a broker crash delays writes instead of failing them.
    delivery_timeout_ms: int = Field(default=20_000, ge=100)
    linger_ms: float = Field(default=1.0, ge=0)
    queue_max_messages: int = Field(default=100_000, ge=1)
    retry_after_seconds: int = Field(default=2, ge=1)
