"""Settings of the read store (``MERLIN_READ_STORE_*``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.state_dirs import default_var_dir

DEFAULT_URL = f"sqlite+aiosqlite:///{default_var_dir() / 'merlin.db'}"


class ReadStoreSettings(BaseSettings):
    """Where the projection writes and the read API reads."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_READ_STORE_", extra="ignore")

    # SQLite by default; e.g. postgresql://merlin@127.0.0.1:55432/merlin in production.
    url: str = DEFAULT_URL
    # A PostgreSQL schema to keep merlin's tables in (the default search_path otherwise).
    db_schema: str | None = None
