"""Async engines for the read store: SQLite (WAL) by default, PostgreSQL in production."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from read_store.dialect import dialect_of


def normalise_url(url: str) -> str:
    """The async-driver form of ``url``: ``sqlite://`` → aiosqlite, ``postgresql://`` → asyncpg."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """``url`` with its password masked, fit to print or log."""
    return make_url(url).render_as_string(hide_password=True)


def create_engine(url: str, *, writer: bool = False, schema: str | None = None) -> AsyncEngine:
    """An engine for the read store at ``url``.

    ``writer`` engines take SQLite's write lock when a transaction begins, so
    two projectors never interleave; readers never wait for it (WAL).
    ``schema`` puts every table of a PostgreSQL store in that schema.
    """
    parsed = make_url(normalise_url(url))
    return dialect_of(parsed).engine(parsed, writer=writer, schema=schema)
