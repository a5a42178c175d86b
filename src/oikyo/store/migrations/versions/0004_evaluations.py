"""evaluations: a kind on runs (train | eval) and the evaluations table

Revision ID: 0004_evaluations
Revises: 0003_base_models
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_evaluations"
down_revision = "0003_base_models"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing runs are training runs; evaluation jobs share the queue with kind "eval".
    op.add_column("runs", sa.Column("kind", sa.String(16), nullable=False, server_default="train"))
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("group_id", sa.String(32), nullable=False, index=True),
        sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id", ondelete="SET NULL"), index=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("model_ref", sa.String(500), nullable=False),
        sa.Column("model_version_id", sa.String(16), sa.ForeignKey("model_versions.id"), index=True),
        sa.Column("base_model", sa.String(500), nullable=False),
        sa.Column("dataset_version_id", sa.String(16), sa.ForeignKey("dataset_versions.id"), nullable=False,
                  index=True),
        sa.Column("split", sa.String(16)),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("metric_versions", sa.JSON, nullable=False),
        sa.Column("generation", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("forgetting", sa.JSON),
        sa.Column("forced_overlap", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("overlap", sa.JSON),
        sa.Column("artifact", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("evaluations")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("kind")
