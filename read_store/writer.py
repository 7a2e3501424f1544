"""The projection's side of the read store: one transaction per batch, positions included.

A batch is a few statements whatever its size: one lookup per table for the
keys it touches (while its events are new, only those it cannot assume absent:
decision 0015), then one multi-row write per table, of plain tuples, since
SQLAlchemy's per-row parameter handling cost more than the database itself.
The dialect says where the transaction runs (on SQLite, one writer thread: one
hand-off per batch), how rows are written (on PostgreSQL, by COPY) and how
lists and times are passed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from domain import Message
from kernel.errors import InfrastructureError
from read_store.dialect import MESSAGE_COLUMNS, Rows, dialect_of
from read_store.projection import (
    Changes,
    Outcome,
    ProjectedMessage,
    Record,
    Snapshot,
    breaks_assumption,
    lookups,
    partitions_of,
    project,
)
from read_store.schema import applied_positions

# Each write is one multi-row write of tuples (how is the dialect's). Messages and outcomes the
# batch's lookups did not find are new rows; a changed message replaces the one kept.
_NEW_MESSAGES = Rows("messages", MESSAGE_COLUMNS)
_CHANGED_MESSAGES = Rows(
    "messages",
    MESSAGE_COLUMNS,
    "ON CONFLICT (room_id, message_id) DO UPDATE"
    " SET body = excluded.body, version = excluded.version, updated_at = excluded.updated_at",
)
_ROOMS = Rows(
    "rooms", ("room_id", "last_seq"), "ON CONFLICT (room_id) DO UPDATE SET last_seq = excluded.last_seq"
)
_OUTCOMES = Rows(
    "event_outcomes",
    ("event_id", "event_type", "room_id", "message_id", "status", "code", "reason", "version",
     "partition", "offset", "recorded_at"),
)  # fmt: skip
_POSITIONS = Rows(
    "positions", ("topic", "partition", "offset", "updated_at"), "ON CONFLICT DO NOTHING"
).insert
_MOVE_POSITION = 'UPDATE positions SET "offset" = ?, updated_at = ? WHERE topic = ? AND "partition" = ?'


class StoreRefused(InfrastructureError):
    """The store will never keep what a batch holds (a retry would fail the same way)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProjectionStore:
    """Applies batches of records to the read store, each exactly once."""

    def __init__(self, engine: AsyncEngine, topic: str) -> None:
        self.engine = engine
        self.topic = topic
        self._dialect = dialect_of(engine.url)
        self._connections = self._dialect.connections(engine, writer=True)
        self._sql = {sql: self._dialect.sql(sql) for sql in (_POSITIONS, _MOVE_POSITION)}
        self._assume_new = True  # see ``apply``

    async def load_positions(self) -> dict[int, int]:
        """The last applied offset of every partition the store has seen."""
        query = applied_positions(self.topic)
        return await self._connections.read(
            lambda connection: {row.partition: row.offset for row in connection.execute(query)}
        )

    async def apply(
        self, records: Sequence[Record], refused: Mapping[tuple[int, int], str] | None = None
    ) -> Changes:
        """Project ``records`` in one transaction that also moves the positions.

        Raise StoreRefused when the store refuses the data for good; any other error
        (a lost connection, a lock, a full disk) may pass on retry. ``refused`` records
        are rejected with their reason instead of applied (see ``project``).

        While batches hold only new events, each is projected assuming so (``lookups``),
        which spares the store most of its reads. When the assumption is wrong the writes
        clash, the transaction is rolled back and the batch is projected again reading
        everything; so are the next batches, until one would not have clashed.
        """
        if not records:
            return Changes()
        if self._assume_new:
            changes = await self._transaction(records, refused, assume_new=True)
            if changes is not None:
                return changes
            self._assume_new = False
        changes = await self._transaction(records, refused, assume_new=False)
        assert changes is not None, "only a batch projected assuming new can clash"
        return changes

    async def _transaction(
        self, records: Sequence[Record], refused: Mapping[tuple[int, int], str] | None, *, assume_new: bool
    ) -> Changes | None:
        """The batch's changes, written; None if, assuming new, they clashed with kept rows."""
        try:
            return await self._connections.transaction(
                lambda connection: self._apply(connection, records, refused, assume_new)
            )
        except DBAPIError as error:
            if assume_new and self._dialect.clash(error):
                return None
            reason = self._dialect.refusal(error)
            if reason is None:
                raise
            raise StoreRefused(reason) from error

    async def ping(self) -> None:
        """Raise unless the store answers (on the writer's own connection)."""
        await self._connections.read(lambda connection: connection.exec_driver_sql("SELECT 1").scalar())

    async def close(self) -> None:
        """Let the batch under way finish, then release the writer (the engine is its owner's to dispose)."""
        await self._connections.close()

    def _apply(
        self,
        connection: Connection,
        records: Sequence[Record],
        refused: Mapping[tuple[int, int], str] | None,
        assume_new: bool,
    ) -> Changes:
        snapshot = self._snapshot(connection, records, assume_new)
        if not assume_new and not breaks_assumption(records, snapshot):
            self._assume_new = True  # for the next batch
        changes = project(records, snapshot, refused)
        self._write(connection, changes, snapshot)
        return changes

    def _snapshot(self, connection: Connection, records: Sequence[Record], assume_new: bool) -> Snapshot:
        dialect, run = self._dialect, connection.exec_driver_sql
        partitions = partitions_of(records)
        now = dialect.store_time(datetime.now(UTC))
        run(self._sql[_POSITIONS], [(self.topic, partition, -1, now) for partition in partitions])
        # On PostgreSQL, lock the positions: a projector that lost the partitions in a
        # rebalance but is still finishing a batch waits here, then sees the newer
        # positions. SQLite's writer already holds the database's write lock.
        snapshot = Snapshot(
            positions=dict(run(dialect.positions_sql, (self.topic, *dialect.lists(list(partitions)))).all())
        )
        keys, room_ids, event_ids = lookups(records, snapshot.positions, assume_new=assume_new)
        if keys:
            rooms, ids = [room for room, _ in keys], [message_id for _, message_id in keys]
            for row in run(dialect.messages_sql, dialect.lists(rooms, ids)):
                room_id, message_id, sender_id, body, version, seq, created_at, updated_at = row
                message = Message(
                    room_id, dialect.read_id(message_id), sender_id, body, version,
                    dialect.read_time(created_at), dialect.read_time(updated_at),
                )  # fmt: skip
                snapshot.messages[(room_id, message.message_id)] = ProjectedMessage(message, seq)
        if room_ids:
            snapshot.last_seq = dict(run(dialect.rooms_sql, dialect.lists(list(room_ids))).all())
        if event_ids:
            rows = run(dialect.outcomes_sql, dialect.lists(list(event_ids)))
            snapshot.seen_event_ids = {
                dialect.read_id(event_id): status == "applied" and code != "duplicate"
                for event_id, status, code in rows
            }
        return snapshot

    def _write(self, connection: Connection, changes: Changes, snapshot: Snapshot) -> None:
        dialect, run = self._dialect, connection.exec_driver_sql
        time, write = dialect.store_time, dialect.write
        now = time(datetime.now(UTC))
        if changes.messages:
            new: list[tuple[Any, ...]] = []
            changed: list[tuple[Any, ...]] = []
            ids = dialect.store_ids([projected.message.message_id for projected in changes.messages.values()])
            for (key, projected), message_id in zip(changes.messages.items(), ids, strict=True):
                row = _message_row(projected, message_id, time)
                (changed if key in snapshot.messages else new).append(row)
            if new:
                write(connection, _NEW_MESSAGES, new)
            if changed:
                write(connection, _CHANGED_MESSAGES, changed)
        if changes.last_seq:
            write(connection, _ROOMS, list(changes.last_seq.items()))
        if changes.outcomes:
            events = [outcome.event for outcome in changes.outcomes]
            # Both columns' ids in one call: a call has its cost, besides each id's.
            ids = dialect.store_ids(
                [event.event_id for event in events] + [event.message_id for event in events]
            )
            event_ids, message_ids = ids[: len(events)], ids[len(events) :]
            rows = [
                _outcome_row(outcome, event_id, message_id, now)
                for outcome, event_id, message_id in zip(
                    changes.outcomes, event_ids, message_ids, strict=True
                )
            ]
            write(connection, _OUTCOMES, rows)
        if changes.positions:
            run(
                self._sql[_MOVE_POSITION],
                [(offset, now, self.topic, partition) for partition, offset in changes.positions.items()],
            )


def _message_row(
    projected: ProjectedMessage, message_id: UUID | str, time: Callable[[datetime], datetime | str]
) -> tuple[Any, ...]:
    message = projected.message
    created = time(message.created_at)
    # A new message was created and last updated at the same moment: format it once.
    updated = created if message.updated_at is message.created_at else time(message.updated_at)
    return (
        message.room_id, message_id, message.sender_id, message.body, message.version,
        projected.seq, created, updated,
    )  # fmt: skip


def _outcome_row(
    outcome: Outcome, event_id: UUID | str, message_id: UUID | str, now: datetime | str
) -> tuple[Any, ...]:
    event = outcome.event
    return (
        event_id, event.event_type, event.room_id, message_id, outcome.status,
        outcome.code, outcome.reason, outcome.version, outcome.partition, outcome.offset, now,
    )  # fmt: skip
