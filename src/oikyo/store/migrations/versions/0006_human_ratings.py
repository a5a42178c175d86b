"""human ratings: blind pairwise rating sessions and their rated pairs

Revision ID: 0006_human_ratings
Revises: 0005_deployments
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_human_ratings"
down_revision = "0005_deployments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rating_sessions",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("system_a", sa.String(500), nullable=False),
        sa.Column("system_b", sa.String(500), nullable=False),
        sa.Column("evaluation_a", sa.String(16), sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("evaluation_b", sa.String(16), sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("dataset_version_id", sa.String(16), sa.ForeignKey("dataset_versions.id"), nullable=False),
        sa.Column("split", sa.String(16)),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_rating_sessions_systems", "rating_sessions", ["system_a", "system_b"])
    op.create_table(
        "rating_pairs",
        sa.Column("id", sa.String(24), primary_key=True),
        sa.Column("session_id", sa.String(16), sa.ForeignKey("rating_sessions.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("example_key", sa.String(64), nullable=False),
        sa.Column("a_on_left", sa.Boolean, nullable=False),
        sa.Column("choice", sa.String(8)),
        sa.Column("winner", sa.String(8)),
        sa.Column("rated_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("rating_pairs")
    op.drop_index("ix_rating_sessions_systems", table_name="rating_sessions")
    op.drop_table("rating_sessions")
