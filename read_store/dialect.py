"""Every difference between the read store's two backends, SQLite and PostgreSQL, in one place.

- **Engines**: SQLite in WAL mode with its write lock taken when a writer's
  transaction begins; PostgreSQL through a pooled asyncpg engine, optionally in
  a schema of its own.
- **Where work runs**: SQLAlchemy work is a plain function over a connection.
  On SQLite it runs whole in a small thread pool on the standard sqlite3 driver
  (one hand-off per question or batch instead of one per driver call, which is
  what the aiosqlite adapter costs); on PostgreSQL it runs on the async engine.
- **SQL**: the projection's batch lookups and the read API's lookup of many
  ids (how a list is passed: one array, probed key by key with
  ``IN (SELECT unnest(…))``, or ``json_each`` over one JSON parameter) and the
  parameter style.
- **Clashes**: which driver errors are a write that met a kept row's key
  (the projection assumed a batch new, and was wrong: decision 0015).
- **Writes**: a batch's rows go to SQLite by one ``executemany``; to PostgreSQL
  by ``COPY``, straight into the table for new rows, through a temporary table
  and one ``INSERT … SELECT … ON CONFLICT`` for rows that replace kept ones.
- **Ids**: PostgreSQL keeps message and event ids as ``uuid`` (migration
  0004) and takes them as objects; SQLite keeps them as text.
- **Times**: PostgreSQL keeps ``timestamptz``; SQLite keeps UTC text
  ``YYYY-MM-DD HH:MM:SS.ffffff`` (what SQLAlchemy writes), written and read
  back only here.
- **Refusals**: which driver errors mean "this data can never be stored"
  (asyncpg's data and integrity errors, SQLSTATE classes 22 and 23; sqlite3's
  ``DataError`` and ``IntegrityError``), as opposed to errors a retry may cure
  (a lost connection, a lock, a full disk). PostgreSQL refuses a NUL character
  in text; SQLite would keep it, so migration 0003 gives it a CHECK that
  refuses it too, and both stores record the same outcome.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from uuid import UUID

import orjson
from asyncpg.exceptions import (
    DataError,
    IntegrityConstraintViolationError,
    PostgresError,
    UniqueViolationError,
)
from sqlalchemy import ColumnElement, Connection, Engine, String, bindparam, event, func, select, type_coerce
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_only

from domain.envelope import format_time
from read_store.schema import messages as messages_table

T = TypeVar("T")

MESSAGE_COLUMNS = ("room_id", "message_id", "sender_id", "body", "version", "seq", "created_at", "updated_at")
_MESSAGE_LIST = ", ".join(MESSAGE_COLUMNS)
_READ_COLUMNS: tuple[ColumnElement[Any], ...] = (
    messages_table.c.message_id,
    messages_table.c.room_id,
    messages_table.c.sender_id,
    messages_table.c.body,
    messages_table.c.version,
    messages_table.c.seq,
    messages_table.c.created_at,
    messages_table.c.updated_at,
)
_SQLITE_READERS = 4
# The reason every store gives for a NUL character, so that replicas agree on the outcome.
NUL_REFUSED = "the read store cannot keep a NUL character (U+0000)"
# SQLite's CHECK against NUL in a message body (migration 0003).
SQLITE_NO_NUL = "ck_messages_body_no_nul"
_WRITER_CACHE_KIB = 64 * 1024
_ID_ARRAY = ARRAY(PG_UUID(as_uuid=False))
_SQLITE_CLASHES = (sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE)


class Connections(Protocol):
    """Runs plain SQLAlchemy functions over a connection of the store, without blocking the loop."""

    async def read(self, work: Callable[[Connection], T]) -> T:
        """``work`` over a connection (each read sees the latest commit)."""
        ...

    async def transaction(self, work: Callable[[Connection], T]) -> T:
        """``work`` in one transaction, committed when it returns."""
        ...

    async def close(self) -> None:
        """Release threads and connections (not the async engine, which its owner disposes)."""
        ...


@dataclass(frozen=True)
class Rows:
    """Where a batch's rows go: ``columns`` of ``table``, and what a clash with a kept row does.

    Without ``conflict`` the rows are new: the projection has read what the store
    holds for them, under the lock of their partitions' positions.
    """

    table: str
    columns: tuple[str, ...]
    conflict: str = ""

    @property
    def column_list(self) -> str:
        return ", ".join(f'"{column}"' for column in self.columns)

    @property
    def insert(self) -> str:
        """The statement that writes one row, written with ``?``."""
        placeholders = ", ".join("?" * len(self.columns))
        return (
            f"INSERT INTO {self.table} ({self.column_list}) VALUES ({placeholders}) {self.conflict}".rstrip()
        )


class Dialect:
    """What a backend does its own way; one instance per backend."""

    # The projection's lookups of what a batch touches, in the driver's parameter style.
    positions_sql: str  # positions of some partitions (locked on PostgreSQL)
    messages_sql: str  # messages by (room, id)
    rooms_sql: str  # last seq of some rooms
    outcomes_sql: str  # outcomes of some event ids
    # The read API's columns of a message.
    read_columns: tuple[ColumnElement[Any], ...] = _READ_COLUMNS
    # Whether a store may keep its tables in a schema of its own (else the database is the store).
    has_schemas = False

    def engine(self, url: URL, *, writer: bool, schema: str | None) -> AsyncEngine:
        """An async engine for the store at ``url``."""
        raise NotImplementedError

    def connections(self, engine: AsyncEngine, *, writer: bool) -> Connections:
        """Where work over ``engine`` runs."""
        return _AsyncConnections(engine)

    def sql(self, statement: str) -> str:
        """``statement`` (written with ``?``) in the driver's parameter style."""
        return statement

    def ids_in(self, column: ColumnElement[Any], ids: Sequence[str]) -> ColumnElement[bool]:
        """``column`` (of message or event ids) is one of ``ids``, as the read API asks it."""
        return column.in_(ids)

    def write(self, connection: Connection, into: Rows, rows: list[tuple[Any, ...]]) -> None:
        """Write ``rows`` as ``into`` says, in the transaction under way."""
        connection.exec_driver_sql(self.sql(into.insert), rows)

    def lists(self, *columns: list[Any]) -> tuple[Any, ...]:
        """The parameters that pass ``columns`` (of equal length; ids as UUIDs) to a lookup."""
        return columns

    def store_time(self, moment: datetime) -> datetime | str:
        """``moment`` as the store keeps it."""
        return moment

    def store_ids(self, values: list[UUID]) -> Sequence[UUID | str]:
        """Message or event ids as the driver takes them in rows (lookups take UUIDs as they are)."""
        # Formatted by orjson in C: ``str()`` of each, in Python, cost several times as much.
        ids: list[str] = orjson.loads(orjson.dumps(values))
        return ids

    def read_id(self, stored: UUID | str) -> UUID:
        """A message or event id the driver returned."""
        return stored if isinstance(stored, UUID) else UUID(stored)

    def read_time(self, stored: datetime | str) -> datetime:
        """A time the store kept, as an aware UTC datetime."""
        return as_utc(stored) if isinstance(stored, datetime) else as_utc(datetime.fromisoformat(stored))

    def api_time(self, stored: datetime | str) -> str:
        """A time the store kept, as the API shows it: RFC 3339 UTC, as ``format_time`` gives."""
        return format_time(self.read_time(stored))

    def clash(self, error: BaseException) -> bool:
        """Whether ``error`` is a write that clashed with a kept row's primary or unique key."""
        raise NotImplementedError

    def refusal(self, error: BaseException) -> str | None:
        """Why the store refuses the data for good, when ``error`` says so; None when a retry may pass."""
        raise NotImplementedError

    def create_schema(self, connection: Connection, schema: str) -> None:
        """Create ``schema`` if it is missing (a store in a schema of its own)."""
        raise NotImplementedError


class PostgreSQL(Dialect):
    positions_sql = (
        'SELECT "partition", "offset" FROM positions'
        ' WHERE topic = $1 AND "partition" = ANY($2::int[]) FOR UPDATE'
    )
    messages_sql = (
        f"SELECT {_MESSAGE_LIST} FROM messages WHERE (room_id, message_id)"
        " IN (SELECT * FROM unnest($1::text[], $2::uuid[]))"
    )
    # ``IN (SELECT unnest(…))``, not ``= ANY(…)``: over a long list, the planner would scan the
    # whole table for ``ANY`` (every batch, however big the store), and probes the key's index
    # for each value here.
    rooms_sql = "SELECT room_id, last_seq FROM rooms WHERE room_id IN (SELECT unnest($1::text[]))"
    outcomes_sql = (
        "SELECT event_id, status, code FROM event_outcomes WHERE event_id IN (SELECT unnest($1::uuid[]))"
    )
    has_schemas = True

    def store_ids(self, values: list[UUID]) -> Sequence[UUID]:
        # Ids are ``uuid`` columns here (migration 0004): the driver encodes the objects themselves.
        return values

    def engine(self, url: URL, *, writer: bool, schema: str | None) -> AsyncEngine:
        connect_args: dict[str, Any] = {}
        if schema:
            connect_args["server_settings"] = {"search_path": schema}
        return create_async_engine(
            url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args
        )

    def refusal(self, error: BaseException) -> str | None:
        cause = _postgres_cause(error)
        if not isinstance(cause, DataError | IntegrityConstraintViolationError):
            return None
        if cause.sqlstate == "22021" and "0x00" in str(cause):
            return NUL_REFUSED
        return f"{cause} (SQLSTATE {cause.sqlstate})"

    def clash(self, error: BaseException) -> bool:
        return isinstance(_postgres_cause(error), UniqueViolationError)

    def ids_in(self, column: ColumnElement[Any], ids: Sequence[str]) -> ColumnElement[bool]:
        # One array parameter probed key by key (see ``outcomes_sql``), not a list of thousands
        # that the planner answers by scanning the table.
        listed = bindparam(None, list(ids), type_=_ID_ARRAY)
        return column.in_(select(func.unnest(listed)))

    def create_schema(self, connection: Connection, schema: str) -> None:
        quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
        connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")

    def write(self, connection: Connection, into: Rows, rows: list[tuple[Any, ...]]) -> None:
        # COPY instead of a statement per row, which was most of a batch's time on the server.
        # Rows that may clash go through a temporary table and one INSERT … SELECT.
        table = into.table if not into.conflict else self._stage(connection, into.table)
        driver = connection.connection.driver_connection
        assert driver is not None, "a connection checked out of the pool has its driver's"
        try:
            await_only(driver.copy_records_to_table(table, records=rows, columns=into.columns))
        except PostgresError as error:
            # Raised by the driver itself, not through SQLAlchemy: wrap it as SQLAlchemy would.
            raise DBAPIError(f"COPY {table}", None, error) from error
        if into.conflict:
            columns = into.column_list
            connection.exec_driver_sql(
                f"INSERT INTO {into.table} ({columns}) SELECT {columns} FROM {table} {into.conflict}"
            )

    @staticmethod
    def _stage(connection: Connection, table: str) -> str:
        # Asked each time, not remembered: a transaction rolled back takes the table with it.
        stage = f"staged_{table}"
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {table}) ON COMMIT DELETE ROWS"
        )
        return stage

    def sql(self, statement: str) -> str:
        parts = statement.split("?")
        return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]


class SQLite(Dialect):
    # One JSON parameter, however long the list: no statement re-rendered per batch size.
    positions_sql = (
        'SELECT "partition", "offset" FROM positions'
        ' WHERE topic = ? AND "partition" IN (SELECT value FROM json_each(?))'
    )
    messages_sql = (
        f"SELECT {_MESSAGE_LIST} FROM messages WHERE (room_id, message_id)"
        " IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
    )
    rooms_sql = "SELECT room_id, last_seq FROM rooms WHERE room_id IN (SELECT value FROM json_each(?))"
    outcomes_sql = (
        "SELECT event_id, status, code FROM event_outcomes WHERE event_id IN (SELECT value FROM json_each(?))"
    )
    # Read times as the stored text and reshape it, rather than parse datetimes only to format them again.
    read_columns = (
        *_READ_COLUMNS[:-2],
        type_coerce(messages_table.c.created_at, String).label("created_at"),
        type_coerce(messages_table.c.updated_at, String).label("updated_at"),
    )

    def engine(self, url: URL, *, writer: bool, schema: str | None) -> AsyncEngine:
        database = url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            _prepare(dbapi_connection, writer=writer)

        if writer:
            _begin_immediately(engine.sync_engine)
        else:

            @event.listens_for(engine.sync_engine, "begin")
            def _on_begin(connection: Any) -> None:
                connection.exec_driver_sql("BEGIN")

        return engine

    def connections(self, engine: AsyncEngine, *, writer: bool) -> Connections:
        # Readers share a few threads and never wait for the writer (WAL); the writer has one
        # thread and one connection, so a batch is one hand-off.
        url = engine.url.set(drivername="sqlite+pysqlite")
        size = 1 if writer else _SQLITE_READERS
        sync = sa_create_engine(
            url, pool_size=size, max_overflow=0, connect_args={"check_same_thread": False}
        )

        @event.listens_for(sync, "connect")
        def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            _prepare(dbapi_connection, writer=writer, read_only=not writer)

        if writer:
            _begin_immediately(sync)
        name = "sqlite-write" if writer else "sqlite-read"
        return _ThreadedConnections(sync, ThreadPoolExecutor(max_workers=size, thread_name_prefix=name))

    def refusal(self, error: BaseException) -> str | None:
        cause = getattr(error, "orig", None)
        if not isinstance(cause, sqlite3.DataError | sqlite3.IntegrityError):
            return None
        return NUL_REFUSED if SQLITE_NO_NUL in str(cause) else str(cause)

    def clash(self, error: BaseException) -> bool:
        cause = getattr(error, "orig", None)
        return isinstance(cause, sqlite3.IntegrityError) and cause.sqlite_errorcode in _SQLITE_CLASHES

    def create_schema(self, connection: Connection, schema: str) -> None:
        raise ValueError("a SQLite read store has no schemas: its file is its own")

    def lists(self, *columns: list[Any]) -> tuple[Any, ...]:
        return (orjson.dumps(list(zip(*columns, strict=True)) if len(columns) > 1 else columns[0]).decode(),)

    def store_time(self, moment: datetime) -> str:
        if moment.tzinfo is not UTC:
            moment = moment.astimezone(UTC)
        # Cut the "+00:00" off rather than build a zone-less copy to format: once per message row.
        return moment.isoformat(" ", "microseconds")[:26]

    def api_time(self, stored: datetime | str) -> str:
        if isinstance(stored, str):  # the text store_time wrote: reshape, don't parse
            return f"{stored[:10]}T{stored[11:26]}Z"
        return super().api_time(stored)


_DIALECTS: dict[str, Dialect] = {"sqlite": SQLite(), "postgresql": PostgreSQL()}


def dialect_of(url: str | URL) -> Dialect:
    """The dialect of the store at ``url``."""
    backend = make_url(url).get_backend_name()
    try:
        return _DIALECTS[backend]
    except KeyError:
        raise ValueError(f"the read store runs on SQLite or PostgreSQL, not {backend}") from None


def _postgres_cause(error: BaseException) -> BaseException | None:
    # SQLAlchemy's asyncpg adapter wraps the driver's error: the class that tells is its cause
    # (or the error itself, from a COPY).
    orig = getattr(error, "orig", None)
    return orig if isinstance(orig, PostgresError) else getattr(orig, "__cause__", None)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; SQLite returns zone-less values that were written as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _prepare(dbapi_connection: Any, *, writer: bool, read_only: bool = False) -> None:
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
        # A bigger page cache keeps the indexes of random ids in memory as the store grows. It is
        # also the forwarder's memory ceiling on SQLite: filled at about 0.75 KB per event written,
        # it is full some 100,000 events into a new store, and flat from there (the soak shows it).
        cursor.execute(f"PRAGMA cache_size=-{_WRITER_CACHE_KIB}")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin_immediately(engine: Engine) -> None:
    # A writer takes SQLite's write lock when its transaction begins, so two
    # projectors never interleave (and never fail to upgrade a read lock).
    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class _AsyncConnections:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def read(self, work: Callable[[Connection], T]) -> T:
        async with self._engine.connect() as connection:
            return await connection.run_sync(work)

    async def transaction(self, work: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(work)

    async def close(self) -> None:
        return None


class _ThreadedConnections:
    def __init__(self, engine: Engine, threads: ThreadPoolExecutor) -> None:
        self._engine = engine
        self._threads = threads

    async def read(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._engine.connect() as connection:
                return work(connection)

        return await asyncio.get_running_loop().run_in_executor(self._threads, run)

    async def transaction(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._engine.begin() as connection:
                return work(connection)

        return await asyncio.get_running_loop().run_in_executor(self._threads, run)

    async def close(self) -> None:
        # Let a transaction under way finish, then stop the threads, off the event loop.
        def stop() -> None:
            self._threads.shutdown(wait=True)
            self._engine.dispose()

        await asyncio.to_thread(stop)
