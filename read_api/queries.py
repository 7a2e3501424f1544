"""The read store's queries: messages, pages of a room, event outcomes, positions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, Engine, String, select, text, type_coerce
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.envelope import format_time
from merlin.position import Position
from read_api.database import sqlite_reader
from read_api.position_watch import PositionWatch
from read_api.schema import applied_positions, event_outcomes, messages
from read_api.timestamps import as_utc

T = TypeVar("T")
_SQLITE_READERS = 4

_COLUMNS = (
    messages.c.message_id,
    messages.c.room_id,
    messages.c.sender_id,
    messages.c.body,
    messages.c.version,
    messages.c.seq,
    messages.c.created_at,
    messages.c.updated_at,
)
# SQLite keeps times as UTC text ("YYYY-MM-DD HH:MM:SS.ffffff"): read them as text and
# reshape them, rather than parse them into datetimes only to format them again.
_SQLITE_COLUMNS = (
    *_COLUMNS[:-2],
    type_coerce(messages.c.created_at, String).label("created_at"),
    type_coerce(messages.c.updated_at, String).label("updated_at"),
)


class ReadStore:
    """Answers the read API's questions from the read store.

    Each question is one plain SQLAlchemy function over a connection. On
    PostgreSQL it runs on the async engine; on SQLite it runs whole in a small
    thread pool on the standard sqlite3 driver, one hand-off per question
    instead of one per driver call (what the aiosqlite adapter costs).
    """

    def __init__(self, engine: AsyncEngine, topic: str) -> None:
        self.engine = engine
        self.topic = topic
        self._watch = PositionWatch(self.positions)
        self._sqlite: Engine | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._columns: tuple[ColumnElement[Any], ...] = _COLUMNS
        if engine.dialect.name == "sqlite":
            self._columns = _SQLITE_COLUMNS
            self._sqlite = sqlite_reader(engine.url.render_as_string(hide_password=False))
            self._threads = ThreadPoolExecutor(max_workers=_SQLITE_READERS, thread_name_prefix="sqlite-read")

    async def _run(self, question: Callable[[Connection], T]) -> T:
        if self._sqlite is not None and self._threads is not None:
            engine = self._sqlite

            def ask() -> T:
                with engine.connect() as connection:
                    return question(connection)

            return await asyncio.get_running_loop().run_in_executor(self._threads, ask)
        async with self.engine.connect() as connection:
            return await connection.run_sync(question)

    async def close(self) -> None:
        """Release the connections and threads."""
        if self._threads is not None:
            self._threads.shutdown(wait=False)
        if self._sqlite is not None:
            self._sqlite.dispose()
        await self.engine.dispose()

    async def message(self, room_id: str, message_id: str) -> dict[str, Any] | None:
        """One message as the API shows it, or None."""
        query = select(*self._columns).where(
            messages.c.room_id == room_id, messages.c.message_id == message_id
        )

        def ask(connection: Connection) -> dict[str, Any] | None:
            row = connection.execute(query).first()
            return None if row is None else _message(row._mapping)

        return await self._run(ask)

    async def page(
        self, room_id: str, after_seq: int | None, before_seq: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of a room in ``seq`` order.

        With only ``before_seq``, the page is the one just before it (scrolling
        back through history); otherwise it starts right after ``after_seq``.
        """
        query = select(*self._columns).where(messages.c.room_id == room_id)
        if after_seq is not None:
            query = query.where(messages.c.seq > after_seq)
        if before_seq is not None:
            query = query.where(messages.c.seq < before_seq)
        backwards = before_seq is not None and after_seq is None
        query = query.order_by(messages.c.seq.desc() if backwards else messages.c.seq).limit(limit)

        def ask(connection: Connection) -> list[dict[str, Any]]:
            rows = [_message(row._mapping) for row in connection.execute(query)]
            return rows[::-1] if backwards else rows

        return await self._run(ask)

    async def outcome(self, event_id: str) -> dict[str, Any] | None:
        """The projection's outcome of one event, or None when it has not seen it."""
        query = select(event_outcomes).where(event_outcomes.c.event_id == event_id)
        row = await self._run(lambda connection: connection.execute(query).first())
        if row is None:
            return None
        outcome: dict[str, Any] = {
            "event_id": row.event_id,
            "event_type": row.event_type,
            "status": row.status,
            "room_id": row.room_id,
            "message_id": row.message_id,
            "position": str(Position(row.partition, row.offset)),
            "recorded_at": format_time(as_utc(row.recorded_at)),
        }
        if row.status == "rejected":
            outcome["rejection"] = {"code": row.code, "reason": row.reason}
        else:
            outcome["version"] = row.version
            if row.code == "duplicate":
                outcome["duplicate"] = True
        return outcome

    async def positions(self) -> dict[int, int]:
        """The last applied offset per partition."""
        query = applied_positions(self.topic)
        return await self._run(
            lambda connection: {row.partition: row.offset for row in connection.execute(query)}
        )

    async def ping(self) -> None:
        """Raise unless the store answers."""
        await self._run(lambda connection: connection.execute(text("SELECT 1")).scalar())

    async def wait_for(self, position: Position, timeout: float) -> bool:
        """Wait until the projection has applied ``position``; False if ``timeout`` s pass first."""
        return await self._watch.wait_for(position, timeout)


def _message(row: Any) -> dict[str, Any]:
    return {
        "message_id": row["message_id"],
        "room_id": row["room_id"],
        "sender_id": row["sender_id"],
        "body": row["body"],
        "version": row["version"],
        "seq": row["seq"],
        "created_at": _timestamp(row["created_at"]),
        "updated_at": _timestamp(row["updated_at"]),
    }


def _timestamp(value: datetime | str) -> str:
    """RFC 3339 UTC, the same text ``format_time`` gives, from a datetime or SQLite's stored text."""
    if isinstance(value, str):
        return f"{value[:10]}T{value[11:26]}Z"
    return format_time(as_utc(value))
