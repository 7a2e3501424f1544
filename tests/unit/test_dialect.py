"""The dialect's value formats, without a database: times stored and shown the same way on both backends."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from asyncpg.exceptions import (
    AdminShutdownError,
    CharacterNotInRepertoireError,
    ConnectionDoesNotExistError,
    DiskFullError,
    SerializationError,
    StringDataRightTruncationError,
    UniqueViolationError,
)
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.exc import DBAPIError

from domain.envelope import format_time
from read_store.dialect import NUL_REFUSED, SQLITE_NO_NUL, PostgreSQL, SQLite, dialect_of

moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@given(moments)
def test_a_stored_time_reads_back_and_shows_as_the_envelope_writes_it(moment: datetime) -> None:
    for dialect in (SQLite(), PostgreSQL()):
        stored = dialect.store_time(moment)
        assert dialect.read_time(stored) == moment
        assert dialect.api_time(stored) == format_time(moment)


def test_sqlite_keeps_utc_text_whatever_the_zone_it_was_given() -> None:
    moment = datetime(2026, 11, 24, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert SQLite().store_time(moment) == "2026-11-24 08:00:00.000005"
    assert SQLite().api_time("2026-11-24 08:00:00.000005") == "2026-11-24T08:00:00.000005Z"
    # What SQLAlchemy's DateTime hands back on SQLite: a naive UTC datetime.
    assert SQLite().api_time(datetime(2026, 11, 24, 8, 0)) == "2026-11-24T08:00:00.000000Z"


def test_postgresql_numbers_its_parameters_and_sqlite_passes_lists_as_json() -> None:
    assert PostgreSQL().sql("UPDATE t SET a = ? WHERE b = ?") == "UPDATE t SET a = $1 WHERE b = $2"
    assert SQLite().sql("UPDATE t SET a = ?") == "UPDATE t SET a = ?"
    assert SQLite().lists(["r1", "r2"], ["a", "b"]) == ('[["r1","a"],["r2","b"]]',)
    assert PostgreSQL().lists(["r1"], ["a"]) == (["r1"], ["a"])


def test_the_backend_comes_from_the_url() -> None:
    assert isinstance(dialect_of("sqlite+aiosqlite:///var/x.db"), SQLite)
    assert isinstance(dialect_of("postgresql+asyncpg://u@h/db"), PostgreSQL)
    with pytest.raises(ValueError, match="SQLite or PostgreSQL"):
        dialect_of("mysql://u@h/db")


def _wrapped(cause: BaseException) -> DBAPIError:
    """A driver error as SQLAlchemy's asyncpg adapter raises it: the driver's class is the cause."""
    adapted = Exception(str(cause))
    adapted.__cause__ = cause
    return DBAPIError("INSERT …", None, adapted)


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'), NUL_REFUSED),
        (StringDataRightTruncationError("value too long"), "value too long (SQLSTATE 22001)"),
        (UniqueViolationError("duplicate key"), "duplicate key (SQLSTATE 23505)"),
        (AdminShutdownError("terminating connection due to administrator command"), None),
        (SerializationError("could not serialize access"), None),
        (DiskFullError("could not extend file"), None),
        (ConnectionDoesNotExistError("connection was closed in the middle of operation"), None),
    ],
)
def test_postgresql_refuses_data_and_integrity_errors_only(cause: Exception, reason: str | None) -> None:
    assert PostgreSQL().refusal(_wrapped(cause)) == reason
    assert PostgreSQL().refusal(cause) is None  # not from the store's driver at all: not a refusal


@pytest.mark.parametrize(
    ("orig", "reason"),
    [
        (sqlite3.IntegrityError(f"CHECK constraint failed: {SQLITE_NO_NUL}"), NUL_REFUSED),
        (sqlite3.DataError("string or blob too big"), "string or blob too big"),
        (sqlite3.OperationalError("database is locked"), None),
        (sqlite3.OperationalError("database or disk is full"), None),
    ],
)
def test_sqlite_refuses_data_and_integrity_errors_only(orig: Exception, reason: str | None) -> None:
    assert SQLite().refusal(DBAPIError("INSERT …", None, orig)) == reason
