"""Settings of the admin API (``MERLIN_ADMIN_API_*``, ``MERLIN_ADMIN_TOKEN``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.settings import ApiServing


class AdminApiSettings(ApiServing, BaseSettings):
    """The admin API (``MERLIN_ADMIN_API_*``, ``MERLIN_ADMIN_TOKEN``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_ADMIN_API_", extra="ignore")

    host: str = Field(
        default="127.0.0.1",
        description="Where the admin API listens: operators' controls, on loopback unless deliberately "
        "exposed.",
    )
    port: int = Field(default=8083, ge=0, le=65535, description="The admin API's port.")
    metrics_port: int = Field(
        default=9105, ge=0, le=65535, description="Their port; 0 turns that listener off."
    )
    # One name each, never the field's own: a choice of "token" would read a TOKEN variable too.
    token: SecretStr | None = Field(
        default=None,
        min_length=16,
        validation_alias="MERLIN_ADMIN_TOKEN",
        description="The bearer token every call but `/healthz` and `/readyz` carries (a JWT with the "
        "`admin` scope works too), at least 16 characters; the admin API does not start without it, and "
        "`merlin endpoints` sends it (`merlin dev`: kept in `var/admin.token`).",
    )
    forwarder_group: str = Field(
        default="merlin-forwarder",
        validation_alias="MERLIN_FORWARDER_GROUP_ID",
        description="The forwarder's group, whose endpoints' groups the admin API inspects and rewinds: "
        "the forwarder's own variable.",
    )
    endpoints_file: Path | None = Field(
        default=None,
        validation_alias="MERLIN_ENDPOINTS_FILE",
        description="Endpoints (TOML or YAML) defined in the settings topic at start, as the forwarder "
        "does: the forwarder's own variable.",
    )
    rewind_wait_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a rewind waits for the endpoint's forwarders to leave its group (static "
        "members stay until their session times out).",
    )
    replay_max: int = Field(default=1000, ge=1, description="Most dead letters one replay call re-delivers.")
