"""continuous learning: loop policies per deployment, the loop's cycles and its decisions

Revision ID: 0011_loop
Revises: 0010_feedback_corrections
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_loop"
down_revision = "0010_feedback_corrections"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loop_policies",
        sa.Column("deployment", sa.String(100), primary_key=True),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("owner", sa.String(64)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("checked_at", sa.DateTime(timezone=True)),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "loop_cycles",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("deployment", sa.String(100), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("champion", sa.String(500), nullable=False),
        sa.Column("challenger", sa.String(64)),
        sa.Column("dataset_version_id", sa.String(64)),
        sa.Column("run_id", sa.String(16)),
        sa.Column("eval_jobs", sa.JSON),
        sa.Column("details", sa.JSON),
        sa.Column("canary_started_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_loop_cycles_deployment_created", "loop_cycles", ["deployment", "created_at"])
    op.create_table(
        "loop_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("deployment", sa.String(100), nullable=False),
        sa.Column("cycle_id", sa.String(16)),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.JSON),
        sa.Column("dedupe_key", sa.String(200), unique=True),
    )
    op.create_index("ix_loop_decisions_deployment_time", "loop_decisions", ["deployment", "time"])


def downgrade() -> None:
    op.drop_index("ix_loop_decisions_deployment_time", table_name="loop_decisions")
    op.drop_table("loop_decisions")
    op.drop_index("ix_loop_cycles_deployment_created", table_name="loop_cycles")
    op.drop_table("loop_cycles")
    op.drop_table("loop_policies")
