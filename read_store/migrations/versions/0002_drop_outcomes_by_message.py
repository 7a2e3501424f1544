"""Drop the index of event outcomes by message: no query reads it, and every projected event paid for it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_event_outcomes_message", "event_outcomes")


def downgrade() -> None:
    op.create_index("ix_event_outcomes_message", "event_outcomes", ["room_id", "message_id"])
