"""PostgreSQL keeps message and event ids as ``uuid``: 16 bytes to index and compare instead of 36
characters, and the projection passes its ids to the driver without turning each into text.

SQLite keeps them as text. The tables are rewritten once, under a lock, for as long as that takes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_IDS = (("messages", "message_id"), ("event_outcomes", "event_id"), ("event_outcomes", "message_id"))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _IDS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE uuid USING {column}::uuid")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _IDS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar(36) USING {column}::text")
