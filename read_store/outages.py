"""Telling a store that cannot answer now (down, restarting, locked) from a query that is wrong."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# What reaching the store can raise while it is down or coming back; SQLAlchemy wraps
# the driver's errors, but a refused connection may surface as the bare OSError.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    PoolTimeout,
    DBAPIError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def is_outage(error: BaseException) -> bool:
    """True when ``error`` says the store could not answer now, so the same call may pass later.

    A wrapped driver error counts by what it wraps: a lost or refused connection, a server
    shutting down or starting up, a locked SQLite file. Errors in the data or the query do not.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OperationalError | InterfaceError | PoolTimeout):
            return True
        if isinstance(seen, DBAPIError):
            seen = seen.orig
            continue
        # Class 08 (connection) and 57 (operator intervention: shutting down, starting up).
        if isinstance(
            seen,
            OSError
            | TimeoutError
            | asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.OperatorInterventionError,
        ):
            return True
        seen = seen.__cause__
    return False
