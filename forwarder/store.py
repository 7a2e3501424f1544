"""The projection's side of the read store: one transaction per batch, positions included."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain import Message, event_type
from forwarder.projection import Changes, Outcome, ProjectedMessage, Record, Snapshot, keys_of, project
from read_api.schema import applied_positions, event_outcomes, messages, positions, rooms
from read_api.timestamps import as_utc


class ProjectionStore:
    """Applies batches of records to the read store, each exactly once."""

    def __init__(self, engine: AsyncEngine, topic: str) -> None:
        self.engine = engine
        self.topic = topic
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def load_positions(self) -> dict[int, int]:
        """The last applied offset of every partition the store has seen."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(applied_positions(self.topic))
            return {row.partition: row.offset for row in rows}

    async def apply(self, records: Sequence[Record]) -> Changes:
        """Project ``records`` in one transaction that also moves the positions."""
        if not records:
            return Changes()
        async with self.engine.begin() as connection:
            snapshot = await self._snapshot(connection, records)
            changes = project(records, snapshot)
            await self._write(connection, changes)
            return changes

    async def _snapshot(self, connection: AsyncConnection, records: Sequence[Record]) -> Snapshot:
        keys, room_ids, event_ids, partitions = keys_of(records)
        now = datetime.now(UTC)
        await connection.execute(
            self._insert(positions)
            .values(
                [{"topic": self.topic, "partition": p, "offset": -1, "updated_at": now} for p in partitions]
            )
            .on_conflict_do_nothing()
        )
        # Lock this batch's partitions: a projector that lost them in a rebalance
        # but is still finishing a batch waits here, then sees the newer positions.
        held = select(positions.c.partition, positions.c.offset).where(
            positions.c.topic == self.topic, positions.c.partition.in_(partitions)
        )
        if self.engine.dialect.name == "postgresql":
            held = held.with_for_update()
        snapshot = Snapshot(positions={row.partition: row.offset for row in await connection.execute(held)})
        if keys:
            rows = await connection.execute(
                select(messages).where(
                    tuple_(messages.c.room_id, messages.c.message_id).in_(
                        [(room, str(message_id)) for room, message_id in keys]
                    )
                )
            )
            for row in rows:
                message = Message(
                    room_id=row.room_id,
                    message_id=UUID(row.message_id),
                    sender_id=row.sender_id,
                    body=row.body,
                    version=row.version,
                    created_at=as_utc(row.created_at),
                    updated_at=as_utc(row.updated_at),
                )
                snapshot.messages[(row.room_id, message.message_id)] = ProjectedMessage(message, row.seq)
        if room_ids:
            rows = await connection.execute(
                select(rooms.c.room_id, rooms.c.last_seq).where(rooms.c.room_id.in_(room_ids))
            )
            snapshot.last_seq = {row.room_id: row.last_seq for row in rows}
        if event_ids:
            rows = await connection.execute(
                select(event_outcomes.c.event_id, event_outcomes.c.status, event_outcomes.c.code).where(
                    event_outcomes.c.event_id.in_([str(event_id) for event_id in event_ids])
                )
            )
            snapshot.seen_event_ids = {
                UUID(row.event_id): row.status == "applied" and row.code != "duplicate" for row in rows
            }
        return snapshot

    async def _write(self, connection: AsyncConnection, changes: Changes) -> None:
        now = datetime.now(UTC)
        if changes.messages:
            statement = self._insert(messages)
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[messages.c.room_id, messages.c.message_id],
                    set_={
                        "body": statement.excluded.body,
                        "version": statement.excluded.version,
                        "updated_at": statement.excluded.updated_at,
                    },
                ),
                [_message_row(projected) for projected in changes.messages.values()],
            )
        if changes.last_seq:
            statement = self._insert(rooms)
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[rooms.c.room_id], set_={"last_seq": statement.excluded.last_seq}
                ),
                [{"room_id": room, "last_seq": seq} for room, seq in changes.last_seq.items()],
            )
        if changes.outcomes:
            await connection.execute(
                self._insert(event_outcomes).on_conflict_do_nothing(),
                [_outcome_row(outcome, now) for outcome in changes.outcomes],
            )
        for partition, offset in changes.positions.items():
            await connection.execute(
                update(positions)
                .where(positions.c.topic == self.topic, positions.c.partition == partition)
                .values(offset=offset, updated_at=now)
            )


def _message_row(projected: ProjectedMessage) -> dict[str, Any]:
    message = projected.message
    return {
        "room_id": message.room_id,
        "message_id": str(message.message_id),
        "sender_id": message.sender_id,
        "body": message.body,
        "version": message.version,
        "seq": projected.seq,
        "created_at": message.created_at,
        "updated_at": message.updated_at,
    }


def _outcome_row(outcome: Outcome, now: datetime) -> dict[str, Any]:
    event = outcome.event
    return {
        "event_id": str(event.event_id),
        "event_type": event_type(event),
        "room_id": event.room_id,
        "message_id": str(event.message_id),
        "status": outcome.status,
        "code": outcome.code,
        "reason": outcome.reason,
        "version": outcome.version,
        "partition": outcome.partition,
        "offset": outcome.offset,
        "recorded_at": now,
    }
