"""The read store's queries: messages, pages of a room, event outcomes, positions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from kernel.position import Position
from read_store.dialect import Dialect, dialect_of
from read_store.position_watch import PositionWatch
from read_store.schema import applied_positions, event_outcomes, messages

T = TypeVar("T")


class AppliedChange(NamedTuple):
    """What the store adds to an applied event to show its message as it was right after it."""

    version: int  # the version the event made
    seq: int  # the message's place in its room, fixed at its creation
    created_at: str  # as the API shows it, fixed at its creation too


class ReadStore:
    """Answers the read API's questions from the read store.

    Each question is one plain SQLAlchemy function over a connection, run where
    the dialect says (``Dialect.connections``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        topic: str,
        max_waiters: int = 1000,
        max_waiters_per_caller: int | None = None,
    ) -> None:
        self.engine = engine
        self.topic = topic
        self._dialect: Dialect = dialect_of(engine.url)
        self._connections = self._dialect.connections(engine, writer=False)
        self._watch = PositionWatch(self.positions, limit=max_waiters, per_caller=max_waiters_per_caller)

    async def _run(self, question: Callable[[Connection], T]) -> T:
        return await self._connections.read(question)

    async def close(self) -> None:
        """Release the connections and threads."""
        await self._connections.close()
        await self.engine.dispose()

    async def message(self, room_id: str, message_id: str) -> dict[str, Any] | None:
        """One message as the API shows it, or None."""
        query = select(*self._dialect.read_columns).where(
            messages.c.room_id == room_id, messages.c.message_id == message_id
        )

        def ask(connection: Connection) -> dict[str, Any] | None:
            row = connection.execute(query).first()
            return None if row is None else self._message(row._mapping)

        return await self._run(ask)

    async def page(
        self, room_id: str, after_seq: int | None, before_seq: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` messages of a room in ``seq`` order.

        With only ``before_seq``, the page is the one just before it (scrolling
        back through history); otherwise it starts right after ``after_seq``.
        """
        query = select(*self._dialect.read_columns).where(messages.c.room_id == room_id)
        if after_seq is not None:
            query = query.where(messages.c.seq > after_seq)
        if before_seq is not None:
            query = query.where(messages.c.seq < before_seq)
        backwards = before_seq is not None and after_seq is None
        query = query.order_by(messages.c.seq.desc() if backwards else messages.c.seq).limit(limit)

        def ask(connection: Connection) -> list[dict[str, Any]]:
            rows = [self._message(row._mapping) for row in connection.execute(query)]
            return rows[::-1] if backwards else rows

        return await self._run(ask)

    async def applied(self, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` the projection applied (not rejected, not a repeated create)."""
        if not event_ids:
            return set()
        query = select(event_outcomes.c.event_id).where(
            self._dialect.ids_in(event_outcomes.c.event_id, event_ids),
            event_outcomes.c.status == "applied",
            or_(event_outcomes.c.code.is_(None), event_outcomes.c.code != "duplicate"),
        )
        return await self._run(lambda connection: set(connection.execute(query).scalars()))

    async def applied_changes(self, event_ids: Sequence[str]) -> dict[str, AppliedChange]:
        """Of ``event_ids``, those the projection applied (as ``applied`` says), each with the version it
        made and its message's immutable fields: with the event's own, the message as a read right after
        the event showed it (the live rooms' changes, decision 0025). One query, whatever the count."""
        if not event_ids:
            return {}
        created = next(column for column in self._dialect.read_columns if column.name == "created_at")
        query = (
            select(event_outcomes.c.event_id, event_outcomes.c.version, messages.c.seq, created)
            .select_from(
                event_outcomes.join(
                    messages,
                    (messages.c.room_id == event_outcomes.c.room_id)
                    & (messages.c.message_id == event_outcomes.c.message_id),
                )
            )
            .where(
                self._dialect.ids_in(event_outcomes.c.event_id, event_ids),
                event_outcomes.c.status == "applied",
                or_(event_outcomes.c.code.is_(None), event_outcomes.c.code != "duplicate"),
            )
        )
        time = self._dialect.api_time

        def ask(connection: Connection) -> dict[str, AppliedChange]:
            return {
                str(row[0]): AppliedChange(row[1], row[2], time(row[3])) for row in connection.execute(query)
            }

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
            "recorded_at": self._dialect.api_time(row.recorded_at),
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

    def reached(self, position: Position) -> bool:
        """Whether the projection is known to have applied ``position``, without asking the store."""
        return self._watch.reached(position)

    async def wait_for(self, position: Position, timeout: float, caller: str | None = None) -> bool:
        """Wait until the projection has applied ``position``; False if ``timeout`` s pass first.

        Raises ``CallerWaitsTooMuch`` when as many of ``caller``'s reads as allowed
        already wait, ``TooManyWaiters`` when as many reads as allowed in all do.
        """
        return await self._watch.wait_for(position, timeout, caller)

    def _message(self, row: Any) -> dict[str, Any]:
        time = self._dialect.api_time
        return {
            "message_id": row["message_id"],
            "room_id": row["room_id"],
            "sender_id": row["sender_id"],
            "body": row["body"],
            "version": row["version"],
            "seq": row["seq"],
            "created_at": time(row["created_at"]),
            "updated_at": time(row["updated_at"]),
        }
