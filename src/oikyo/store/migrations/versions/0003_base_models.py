"""base model catalog

Revision ID: 0003_base_models
Revises: 0002_runs_jobs
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_base_models"
down_revision = "0002_runs_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "base_models",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("trust_remote_code", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("info", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("base_models")
