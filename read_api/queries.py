"""The read store's queries: messages, pages of a room, event outcomes, positions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.envelope import format_time
from merlin.position import Position
from read_api.schema import event_outcomes, messages, positions
from read_api.timestamps import as_utc

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


class ReadStore:
    """Answers the read API's questions from the read store."""

    def __init__(self, engine: AsyncEngine, topic: str) -> None:
        self.engine = engine
        self.topic = topic

    async def message(self, room_id: str, message_id: str) -> dict[str, Any] | None:
        """One message as the API shows it, or None."""
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(*_COLUMNS).where(
                        messages.c.room_id == room_id, messages.c.message_id == message_id
                    )
                )
            ).first()
        return None if row is None else _message(row._mapping)

    async def page(
        self, room_id: str, after_seq: int | None, before_seq: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of a room in ``seq`` order.

        With only ``before_seq``, the page is the one just before it (scrolling
        back through history); otherwise it starts right after ``after_seq``.
        """
        query = select(*_COLUMNS).where(messages.c.room_id == room_id)
        if after_seq is not None:
            query = query.where(messages.c.seq > after_seq)
        if before_seq is not None:
            query = query.where(messages.c.seq < before_seq)
        backwards = before_seq is not None and after_seq is None
        query = query.order_by(messages.c.seq.desc() if backwards else messages.c.seq).limit(limit)
        async with self.engine.connect() as connection:
            rows = [_message(row._mapping) for row in await connection.execute(query)]
        return rows[::-1] if backwards else rows

    async def outcome(self, event_id: str) -> dict[str, Any] | None:
        """The projection's outcome of one event, or None when it has not seen it."""
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(select(event_outcomes).where(event_outcomes.c.event_id == event_id))
            ).first()
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
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(positions.c.partition, positions.c.offset).where(positions.c.topic == self.topic)
            )
            return {row.partition: row.offset for row in rows}

    async def wait_for(self, position: Position, timeout: float, interval: float = 0.01) -> bool:
        """Wait until the projection has applied ``position``; False if ``timeout`` s pass first."""
        deadline = time.monotonic() + timeout
        while True:
            if (await self.positions()).get(position.partition, -1) >= position.offset:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 2, 0.1)


def _message(row: Any) -> dict[str, Any]:
    return {
        "message_id": row["message_id"],
        "room_id": row["room_id"],
        "sender_id": row["sender_id"],
        "body": row["body"],
        "version": row["version"],
        "seq": row["seq"],
        "created_at": format_time(as_utc(row["created_at"])),
        "updated_at": format_time(as_utc(row["updated_at"])),
    }
