"""Async engines for the read store: SQLite (WAL) by default, PostgreSQL in production."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from merlin.settings import PROJECT_ROOT

_WRITER_CACHE_KIB = 64 * 1024
DEFAULT_URL = f"sqlite+aiosqlite:///{PROJECT_ROOT / 'var' / 'merlin.db'}"


def normalise_url(url: str) -> str:
    """The async-driver form of ``url``: ``sqlite://`` → aiosqlite, ``postgresql://`` → asyncpg."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str, *, writer: bool = False, schema: str | None = None) -> AsyncEngine:
    """An engine for the read store at ``url``.

    ``writer`` engines take SQLite's write lock when a transaction begins, so
    two projectors never interleave; readers never wait for it (WAL).
    ``schema`` puts every table of a PostgreSQL store in that schema.
    """
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, writer)
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["server_settings"] = {"search_path": schema}
    return create_async_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args
    )


def sqlite_reader(url: str) -> Engine:
    """A synchronous engine that only reads a SQLite read store (WAL: never waits for the writer)."""
    return _sqlite_sync_engine(url, writer=False, pool_size=8)


def sqlite_writer(url: str) -> Engine:
    """A synchronous engine with one connection that writes a SQLite read store, for a writer thread."""
    return _sqlite_sync_engine(url, writer=True, pool_size=1)


def _sqlite_sync_engine(url: str, *, writer: bool, pool_size: int) -> Engine:
    parsed = make_url(url).set(drivername="sqlite+pysqlite")
    engine = sa_create_engine(
        parsed, pool_size=pool_size, max_overflow=0, connect_args={"check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        _prepare_sqlite(dbapi_connection, writer=writer, read_only=not writer)

    if writer:
        _begin_immediately(engine)
    return engine


def _prepare_sqlite(dbapi_connection: Any, *, writer: bool, read_only: bool = False) -> None:
    # Let SQLAlchemy, not the driver, decide where transactions begin; readers autocommit,
    # so each read sees the latest commit.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    if read_only:
        cursor.execute("PRAGMA query_only=ON")
    else:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    if writer:
        # A bigger page cache keeps the indexes of random ids in memory as the store grows.
        cursor.execute(f"PRAGMA cache_size=-{_WRITER_CACHE_KIB}")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin_immediately(engine: Engine) -> None:
    # A writer takes SQLite's write lock when its transaction begins, so two
    # projectors never interleave (and never fail to upgrade a read lock).
    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_engine(url: str, database: str | None, writer: bool) -> AsyncEngine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        _prepare_sqlite(dbapi_connection, writer=writer)

    if writer:
        _begin_immediately(engine.sync_engine)
    else:

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN")

    return engine
