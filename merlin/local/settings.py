"""Settings of the broker and database merlin runs on this machine (``MERLIN_LOCAL_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.state_dirs import default_cache_dir, default_var_dir


class LocalSettings(BaseSettings):
    """The broker and database that merlin runs on this machine (``MERLIN_LOCAL_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_LOCAL_", extra="ignore")

    cache_dir: Path = Field(
        default=default_cache_dir(),
        description="Downloads (the broker's jars): a checkout's `.cache/`; installed, "
        "`$XDG_CACHE_HOME/merlin` (`~/.cache/merlin`).",
    )
    var_dir: Path = Field(
        default=default_var_dir(),
        description="The local servers' data and logs, and the secrets `merlin dev` keeps: a checkout's "
        "`var/`; installed, `$XDG_DATA_HOME/merlin` (`~/.local/share/merlin`).",
    )
    kafka_port: int = Field(
        default=9092,
        ge=1,
        le=65535,
        description="The local broker's port (its controller takes the next one; a cluster's node i, this "
        "+ 2i).",
    )
    kafka_heap: str = Field(default="768m", description="The local broker's Java heap.")
    kafka_start_timeout: float = Field(
        default=90.0, gt=0, description="How long (s) `merlin kafka start` waits for the broker to answer."
    )
    postgres_port: int = Field(default=55432, ge=1, le=65535, description="The local PostgreSQL's port.")
    postgres_user: str = Field(
        default="merlin", description="The local PostgreSQL's user, trusted on loopback."
    )
    postgres_databases: list[str] = Field(
        default=["merlin", "merlin_test"],
        description="The databases `merlin postgres start` creates.",
    )
    postgres_data_dir: Path | None = Field(
        default=None,
        description="Where the local PostgreSQL cluster lives; unset, under the var directory, or in "
        "postgres' home when merlin runs as root.",
    )


class DevSettings(BaseSettings):
    """What `merlin dev` runs beside the services (``MERLIN_DEV_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_DEV_", extra="ignore")

    page_port: int = Field(
        default=8084,
        ge=0,
        le=65535,
        description="Where `merlin dev` serves its live-rooms page, on 127.0.0.1 only (it hands the "
        "development users' tokens to this machine's callers); the write and read APIs allow its origin "
        "(CORS). 0: no page.",
    )
