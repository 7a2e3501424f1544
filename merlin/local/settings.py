"""Settings of the broker and database merlin runs on this machine (``MERLIN_LOCAL_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.state_dirs import default_cache_dir, default_var_dir


class LocalSettings(BaseSettings):
    """The broker and database that merlin runs on this machine (``MERLIN_LOCAL_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_LOCAL_", extra="ignore")

    cache_dir: Path = default_cache_dir()
    var_dir: Path = default_var_dir()
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_heap: str = "768m"
    kafka_start_timeout: float = Field(default=90.0, gt=0)
    postgres_port: int = Field(default=55432, ge=1, le=65535)
    postgres_user: str = "merlin"
    postgres_databases: list[str] = ["merlin", "merlin_test"]
    # Where the cluster lives; by default under var/, or postgres' home when run as root.
    postgres_data_dir: Path | None = None
