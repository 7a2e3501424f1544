"""The projection's side of the read store: one transaction per batch, positions included.

A batch is a few statements whatever its size: one lookup per table for the
keys it touches, then one multi-row write per table, with plain driver SQL and
tuples, since SQLAlchemy's per-row parameter handling cost more than the
database itself. On SQLite the whole batch runs on one writer thread (one
hand-off per batch); on PostgreSQL it runs on the async engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from domain import Message, event_type
from forwarder.projection import Changes, Outcome, ProjectedMessage, Record, Snapshot, keys_of, project
from read_api.database import sqlite_writer
from read_api.schema import applied_positions
from read_api.timestamps import as_utc

_MESSAGE_COLUMNS = "room_id, message_id, sender_id, body, version, seq, created_at, updated_at"


def _insert(table: str, columns: str, conflict: str) -> str:
    placeholders = ", ".join("?" * len(columns.split(",")))
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) {conflict}"


# Each write is one executemany of tuples. (One statement over arrays on PostgreSQL
# saved server time but cost more in asyncpg's encoding of the arrays.)
_MESSAGES = _insert(
    "messages",
    _MESSAGE_COLUMNS,
    "ON CONFLICT (room_id, message_id) DO UPDATE"
    " SET body = excluded.body, version = excluded.version, updated_at = excluded.updated_at",
)
_ROOMS = _insert(
    "rooms", "room_id, last_seq", "ON CONFLICT (room_id) DO UPDATE SET last_seq = excluded.last_seq"
)
_OUTCOMES = _insert(
    "event_outcomes",
    "event_id, event_type, room_id, message_id, status, code, reason, version,"
    ' "partition", "offset", recorded_at',
    "ON CONFLICT DO NOTHING",
)
_POSITIONS = _insert("positions", 'topic, "partition", "offset", updated_at', "ON CONFLICT DO NOTHING")
_MOVE_POSITION = 'UPDATE positions SET "offset" = ?, updated_at = ? WHERE topic = ? AND "partition" = ?'


class _Dialect:
    """The SQL that differs between the backends: how a list is passed, how a time is kept."""

    def __init__(self, postgresql: bool) -> None:
        self.postgresql = postgresql
        if postgresql:
            self.held = (
                'SELECT "partition", "offset" FROM positions'
                ' WHERE topic = $1 AND "partition" = ANY($2::int[]) FOR UPDATE'
            )
            self.messages = (
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE (room_id, message_id)"
                " IN (SELECT * FROM unnest($1::text[], $2::text[]))"
            )
            self.rooms = "SELECT room_id, last_seq FROM rooms WHERE room_id = ANY($1::text[])"
            self.outcomes = (
                "SELECT event_id, status, code FROM event_outcomes WHERE event_id = ANY($1::text[])"
            )
        else:
            # One JSON parameter, however long the list: no statement re-rendered per batch size.
            self.held = (
                'SELECT "partition", "offset" FROM positions'
                ' WHERE topic = ? AND "partition" IN (SELECT value FROM json_each(?))'
            )
            self.messages = (
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE (room_id, message_id)"
                " IN (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
            )
            self.rooms = (
                "SELECT room_id, last_seq FROM rooms WHERE room_id IN (SELECT value FROM json_each(?))"
            )
            self.outcomes = (
                "SELECT event_id, status, code FROM event_outcomes"
                " WHERE event_id IN (SELECT value FROM json_each(?))"
            )

    def sql(self, statement: str) -> str:
        """``statement`` in the driver's parameter style (``?`` or ``$n``)."""
        if not self.postgresql:
            return statement
        parts = statement.split("?")
        return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]

    def lists(self, *columns: list[Any]) -> tuple[Any, ...]:
        """The parameters that pass ``columns`` (of equal length) to a lookup."""
        if self.postgresql:
            return columns
        return (orjson.dumps(list(zip(*columns, strict=True)) if len(columns) > 1 else columns[0]).decode(),)

    def time(self, moment: datetime) -> datetime | str:
        """``moment`` as the store keeps it; SQLite keeps UTC text, as SQLAlchemy writes it."""
        if self.postgresql:
            return moment
        if moment.tzinfo is not UTC:
            moment = moment.astimezone(UTC)
        return moment.replace(tzinfo=None).isoformat(" ", "microseconds")

    def read_time(self, stored: datetime | str) -> datetime:
        return as_utc(datetime.fromisoformat(stored) if isinstance(stored, str) else stored)


class ProjectionStore:
    """Applies batches of records to the read store, each exactly once."""

    def __init__(self, engine: AsyncEngine, topic: str) -> None:
        self.engine = engine
        self.topic = topic
        self._dialect = _Dialect(engine.dialect.name == "postgresql")
        self._sqlite: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._sqlite = sqlite_writer(engine.url.render_as_string(hide_password=False))
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-write")
        self._sql = {
            sql: self._dialect.sql(sql) for sql in (_MESSAGES, _ROOMS, _OUTCOMES, _POSITIONS, _MOVE_POSITION)
        }

    async def load_positions(self) -> dict[int, int]:
        """The last applied offset of every partition the store has seen."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(applied_positions(self.topic))
            return {row.partition: row.offset for row in rows}

    async def apply(self, records: Sequence[Record]) -> Changes:
        """Project ``records`` in one transaction that also moves the positions."""
        if not records:
            return Changes()
        if self._sqlite is not None:
            sqlite = self._sqlite

            def in_writer_thread() -> Changes:
                with sqlite.begin() as connection:
                    return self._apply(connection, records)

            return await asyncio.get_running_loop().run_in_executor(self._writer, in_writer_thread)
        async with self.engine.begin() as connection:
            return await connection.run_sync(self._apply, records)

    async def close(self) -> None:
        """Let the writer thread finish its batch, then stop it (the engine stays its owner's to dispose)."""
        writer, sqlite = self._writer, self._sqlite
        if writer is not None and sqlite is not None:

            def stop() -> None:
                writer.shutdown(wait=True)
                sqlite.dispose()

            await asyncio.to_thread(stop)

    def _apply(self, connection: Connection, records: Sequence[Record]) -> Changes:
        snapshot = self._snapshot(connection, records)
        changes = project(records, snapshot)
        self._write(connection, changes)
        return changes

    def _snapshot(self, connection: Connection, records: Sequence[Record]) -> Snapshot:
        dialect, run = self._dialect, connection.exec_driver_sql
        keys, room_ids, event_ids, partitions = keys_of(records)
        now = dialect.time(datetime.now(UTC))
        run(self._sql[_POSITIONS], [(self.topic, partition, -1, now) for partition in partitions])
        # On PostgreSQL, lock the positions: a projector that lost the partitions in a
        # rebalance but is still finishing a batch waits here, then sees the newer
        # positions. SQLite's writer already holds the database's write lock.
        snapshot = Snapshot(
            positions=dict(run(dialect.held, (self.topic, *dialect.lists(list(partitions)))).all())
        )
        if keys:
            rooms, ids = [room for room, _ in keys], [str(message_id) for _, message_id in keys]
            for row in run(dialect.messages, dialect.lists(rooms, ids)):
                room_id, message_id, sender_id, body, version, seq, created_at, updated_at = row
                message = Message(
                    room_id, UUID(message_id), sender_id, body, version,
                    dialect.read_time(created_at), dialect.read_time(updated_at),
                )  # fmt: skip
                snapshot.messages[(room_id, message.message_id)] = ProjectedMessage(message, seq)
        if room_ids:
            snapshot.last_seq = dict(run(dialect.rooms, dialect.lists(list(room_ids))).all())
        if event_ids:
            rows = run(dialect.outcomes, dialect.lists([str(event_id) for event_id in event_ids]))
            snapshot.seen_event_ids = {
                UUID(event_id): status == "applied" and code != "duplicate" for event_id, status, code in rows
            }
        return snapshot

    def _write(self, connection: Connection, changes: Changes) -> None:
        run, time = connection.exec_driver_sql, self._dialect.time
        now = time(datetime.now(UTC))
        if changes.messages:
            rows = [_message_row(projected, time) for projected in changes.messages.values()]
            run(self._sql[_MESSAGES], rows)
        if changes.last_seq:
            run(self._sql[_ROOMS], list(changes.last_seq.items()))
        if changes.outcomes:
            run(self._sql[_OUTCOMES], [_outcome_row(outcome, now) for outcome in changes.outcomes])
        if changes.positions:
            run(
                self._sql[_MOVE_POSITION],
                [(offset, now, self.topic, partition) for partition, offset in changes.positions.items()],
            )


def _message_row(projected: ProjectedMessage, time: Callable[[datetime], datetime | str]) -> tuple[Any, ...]:
    message = projected.message
    created = time(message.created_at)
    # A new message was created and last updated at the same moment: format it once.
    updated = created if message.updated_at is message.created_at else time(message.updated_at)
    return (
        message.room_id, str(message.message_id), message.sender_id, message.body, message.version,
        projected.seq, created, updated,
    )  # fmt: skip


def _outcome_row(outcome: Outcome, now: datetime | str) -> tuple[Any, ...]:
    event = outcome.event
    return (
        str(event.event_id), event_type(event), event.room_id, str(event.message_id), outcome.status,
        outcome.code, outcome.reason, outcome.version, outcome.partition, outcome.offset, now,
    )  # fmt: skip
