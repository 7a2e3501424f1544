"""Settings of the admin API (``MERLIN_ADMIN_API_*``, ``MERLIN_ADMIN_TOKEN``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AdminApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERLIN_ADMIN_API_", extra="ignore")

    # Operators' controls: on loopback unless deliberately exposed.
    host: str = "127.0.0.1"
    port: int = Field(default=8083, ge=0, le=65535)
    # Worker processes sharing the listening socket (`--workers N`), each its own interpreter.
    workers: int = Field(default=1, ge=1, le=64)
    # Prometheus's /metrics, /healthz and /readyz, without a token, on http://metrics_host:metrics_port
    # (with workers, served by their parent for all of them); port 0 turns it off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9105, ge=0, le=65535)
    # Every call but /healthz and /readyz carries ``Authorization: Bearer <token>``. Each of these
    # fields has one name, never its own as well: a choice of "token" would read a TOKEN variable.
    token: SecretStr | None = Field(default=None, min_length=16, validation_alias="MERLIN_ADMIN_TOKEN")
    # The forwarder's group and endpoints: the same variables the forwarder reads.
    forwarder_group: str = Field(default="merlin-forwarder", validation_alias="MERLIN_FORWARDER_GROUP_ID")
    # Defined in the settings topic at start, as the forwarder does (``webhooks.given``).
    endpoints_file: Path | None = Field(default=None, validation_alias="MERLIN_ENDPOINTS_FILE")
    # How long a rewind waits for the endpoint's forwarders to leave its group (static members
    # stay until their session times out).
    rewind_wait_seconds: float = Field(default=30.0, gt=0)
    # Most dead letters one replay call re-delivers.
    replay_max: int = Field(default=1000, ge=1)
