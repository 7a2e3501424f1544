"""Settings of the read store (``MERLIN_READ_STORE_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.state_dirs import default_var_dir

DEFAULT_URL = f"sqlite+aiosqlite:///{default_var_dir() / 'merlin.db'}"


class ReadStoreSettings(BaseSettings):
    """Where the projection writes and the read API reads (``MERLIN_READ_STORE_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_READ_STORE_", extra="ignore")

    url: str = Field(
        default=DEFAULT_URL,
        description="The read store: `sqlite:///…` or `postgresql://…`, e.g. "
        "`postgresql://merlin@127.0.0.1:55432/merlin` in production. By default `merlin.db` in the "
        "default var directory (a checkout's `var/`; installed, `$XDG_DATA_HOME/merlin`), whatever "
        "`MERLIN_LOCAL_VAR_DIR` says.",
    )
    db_schema: str | None = Field(
        default=None,
        description="A PostgreSQL schema to keep merlin's tables in; unset, the default `search_path`.",
    )
