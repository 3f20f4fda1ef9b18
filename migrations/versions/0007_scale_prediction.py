"""scale predictions: a ladder of runs per mixture and the scaling law fitted on it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 21:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scale_prediction",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "experiment_id", sa.Integer(), sa.ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "recommendation_id",
            sa.Integer(),
            sa.ForeignKey("recommendation.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("mixtures", sa.JSON(), nullable=False),
        sa.Column("rungs", sa.JSON(), nullable=False),
        sa.Column("seeds", sa.Integer(), nullable=False),
        sa.Column("target_params", sa.BigInteger(), nullable=False),
        sa.Column("target_tokens", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_scale_prediction_experiment_id_id", "scale_prediction", ["experiment_id", "id"])
    with op.batch_alter_table("experiment") as batch:
        batch.add_column(sa.Column("target_params", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("ladder_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_run_ladder_id_scale_prediction", "scale_prediction", ["ladder_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_run_ladder_id", ["ladder_id"])


def downgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.drop_index("ix_run_ladder_id")
        batch.drop_constraint("fk_run_ladder_id_scale_prediction", type_="foreignkey")
        batch.drop_column("ladder_id")
    with op.batch_alter_table("experiment") as batch:
        batch.drop_column("target_params")
    op.drop_index("ix_scale_prediction_experiment_id_id", "scale_prediction")
    op.drop_table("scale_prediction")
