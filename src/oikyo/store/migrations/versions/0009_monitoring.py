"""monitoring: deployment events (alerts delivered by Alertmanager, drift alarms ...), quality signals
stored with each served request, and drift checks over windows of live traffic

Revision ID: 0009_monitoring
Revises: 0008_tune_promotions
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_monitoring"
down_revision = "0008_tune_promotions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployment_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("deployment", sa.String(100), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16)),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("details", sa.JSON),
        sa.Column("dedupe_key", sa.String(200), unique=True),
    )
    op.create_index("ix_deployment_events_deployment_time", "deployment_events", ["deployment", "time"])
    with op.batch_alter_table("served_requests") as batch:
        batch.add_column(sa.Column("quality", sa.JSON))
    op.create_table(
        "drift_checks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("deployment", sa.String(100), nullable=False),
        sa.Column("variant", sa.String(200)),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True)),
        sa.Column("window_end", sa.DateTime(timezone=True)),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("statistic", sa.Float, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("alarm", sa.Boolean, nullable=False),
        sa.Column("details", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_drift_checks_deployment_created", "drift_checks", ["deployment", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_drift_checks_deployment_created", "drift_checks")
    op.drop_table("drift_checks")
    with op.batch_alter_table("served_requests") as batch:
        batch.drop_column("quality")
    op.drop_index("ix_deployment_events_deployment_time", "deployment_events")
    op.drop_table("deployment_events")
