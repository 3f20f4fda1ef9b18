"""planner jobs, runs tagged with the history they were planned on, stored fit plots

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 14:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "planner_job",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("job", sa.String(length=16), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queue_target", sa.Integer(), nullable=False),
        sa.Column("passes", sa.Integer(), nullable=False),
        sa.Column("last_duration_s", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiment.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("experiment_id", "job"),
    )
    # Experiments that already exist get their jobs, with one pass requested so nothing waits.
    for job in ("propose", "refit"):
        op.execute(
            "INSERT INTO planner_job (experiment_id, job, requested, done, queue_target, passes, updated_at) "
            f"SELECT id, '{job}', 1, 0, 0, 0, CURRENT_TIMESTAMP FROM experiment"
        )
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("planned_on", sa.Integer(), nullable=True))
    with op.batch_alter_table("recommendation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fit", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("recommendation", schema=None) as batch_op:
        batch_op.drop_column("fit")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("planned_on")
    op.drop_table("planner_job")
