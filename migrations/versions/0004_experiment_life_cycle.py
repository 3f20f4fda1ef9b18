"""experiments get tags, notes and an archive time; imported runs may count towards the budget

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("experiment") as batch:
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("notes", sa.Text(), nullable=True))
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("counts_budget", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.drop_column("counts_budget")
    with op.batch_alter_table("experiment") as batch:
        batch.drop_column("archived_at")
        batch.drop_column("notes")
        batch.drop_column("tags")
