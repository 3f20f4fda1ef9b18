"""planner jobs remember which request their last claim covered, so a tell that finds a request still
waiting for a planner need not lock the job row to add its own

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 07:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("planner_job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed", sa.Integer(), nullable=False, server_default="0"))
    # Every request so far counts as claimed: the next tell adds its own, as it always did.
    op.execute("UPDATE planner_job SET claimed = requested")


def downgrade() -> None:
    with op.batch_alter_table("planner_job", schema=None) as batch_op:
        batch_op.drop_column("claimed")
