"""SQLite refuses a NUL character in a message body, as PostgreSQL does, so both stores agree on the outcome.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# As read_store.dialect.SQLITE_NO_NUL; a migration keeps its own copy so history stays as it ran.
_NAME = "ck_messages_body_no_nul"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL refuses NUL in text by itself
    with op.batch_alter_table("messages") as batch:
        # As a blob: SQLite's text functions stop at a NUL.
        batch.create_check_constraint(_NAME, "instr(CAST(body AS BLOB), x'00') = 0")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(_NAME, type_="check")
