"""dataset versions

Revision ID: 0001_dataset_versions
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_dataset_versions"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("format", sa.String(64)),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("artifact", sa.String(200), nullable=False),
        sa.Column("parent_id", sa.String(16), sa.ForeignKey("dataset_versions.id")),
        sa.Column("lineage", sa.JSON, nullable=False),
        sa.Column("splits", sa.JSON),
        sa.Column("is_eval_set", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("dropped_artifact", sa.String(200)),
        sa.Column("description", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dataset_versions")
