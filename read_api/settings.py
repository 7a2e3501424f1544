"""Settings of the read API (``MERLIN_READ_API_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReadApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERLIN_READ_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8082, ge=0, le=65535)
    # Worker processes sharing the listening socket (`--workers N`), each its own interpreter.
    workers: int = Field(default=1, ge=1, le=64)
    # Prometheus's /metrics, /healthz and /readyz, without a token, on http://metrics_host:metrics_port
    # (with workers, served by their parent for all of them); port 0 turns it off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9104, ge=0, le=65535)
    # How long a read with after_position waits for the projection to catch up.
    position_wait_seconds: float = Field(default=2.0, gt=0, le=30)
    # Most reads waiting for the projection at once; past it, 503 at once (not a queue).
    max_position_waiters: int = Field(default=1000, ge=1)
    # Most reads of one caller (the token's subject) waiting at once, within the bound above;
    # past it, 429 at once, so that no caller can fill the process's bound for the others.
    max_position_waiters_per_caller: int = Field(default=100, ge=1)
    max_page_size: int = Field(default=200, ge=1)
    default_page_size: int = Field(default=50, ge=1)
