"""Alembic migrations of the read store, run from code (``merlin db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from read_store.dialect import dialect_of
from read_store.engines import create_engine, normalise_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the read store at ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


async def upgrade(
    url: str, schema: str | None = None, revision: str = "head", *, create_schema: bool = False
) -> None:
    """Bring the read store at ``url`` up to ``revision``; with ``create_schema``, create ``schema`` first."""
    config = alembic_config(url)
    engine = create_engine(url, writer=True, schema=schema)

    def run(connection: Connection) -> None:
        if create_schema and schema:
            dialect_of(url).create_schema(connection, schema)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()
