"""runs indexed by (experiment, status, id): ask finds the oldest queued run without scanning the history

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 15:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_run_experiment_id_status_id", "run", ["experiment_id", "status", "id"])
    op.drop_index("ix_run_experiment_id_status", table_name="run")


def downgrade() -> None:
    op.create_index("ix_run_experiment_id_status", "run", ["experiment_id", "status"])
    op.drop_index("ix_run_experiment_id_status_id", table_name="run")
