"""The read store's tables (SQLAlchemy Core). Alembic migrations create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.dialects.postgresql import UUID

metadata = MetaData()

# A message or event id: text on SQLite, ``uuid`` on PostgreSQL (migration 0004); text to Python on both.
_ID = String(36).with_variant(UUID(as_uuid=False), "postgresql")

messages = Table(
    "messages",
    metadata,
    Column("room_id", String(128), primary_key=True),
    Column("message_id", _ID, primary_key=True),
    Column("sender_id", String(128), nullable=False),
    Column("body", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("room_id", "seq", name="uq_messages_room_seq"),
)

rooms = Table(
    "rooms",
    metadata,
    Column("room_id", String(128), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

# The projection's outcome of every event it has seen, keyed by event id: this
# is what makes a replayed or re-sent event a no-op.
event_outcomes = Table(
    "event_outcomes",
    metadata,
    Column("event_id", _ID, primary_key=True),
    Column("event_type", String(32), nullable=False),
    Column("room_id", String(128), nullable=False),
    Column("message_id", _ID, nullable=False),
    Column("status", String(16), nullable=False),
    Column("code", String(32)),
    Column("reason", Text),
    Column("version", Integer),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

# The last applied offset per partition, written in the same transaction as the
# rows it produced: the projection's exactly-once bookmark.
positions = Table(
    "positions",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def applied_positions(topic: str) -> Select[tuple[int, int]]:
    """The last applied offset of each partition of ``topic``: what the projection resumes from."""
    return select(positions.c.partition, positions.c.offset).where(positions.c.topic == topic)
