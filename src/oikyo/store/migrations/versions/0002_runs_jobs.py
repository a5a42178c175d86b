"""training runs as durable jobs: runs, metrics, run events, checkpoints, model versions, workers

Revision ID: 0002_runs_jobs
Revises: 0001_dataset_versions
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_runs_jobs"
down_revision = "0001_dataset_versions"
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("dataset_version_id", sa.String(16), sa.ForeignKey("dataset_versions.id")),
        sa.Column("base_model", sa.String(500), nullable=False),
        sa.Column("seed", sa.Integer),
        sa.Column("lease_owner", sa.String(100)),
        _time("lease_expires_at", nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
        sa.Column("error", sa.Text),
        sa.Column("run_dir", sa.String(500), nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("resume_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reproduced_from", sa.String(16)),
        _time("created_at"),
        _time("started_at", nullable=True),
        _time("finished_at", nullable=True),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        _time("time"),
    )
    op.create_index("ix_metrics_run_name_step", "metrics", ["run_id", "name", "step"])
    op.create_table(
        "run_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        _time("time"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("eval_loss", sa.Float),
        sa.Column("is_best", sa.Boolean, nullable=False, server_default=sa.false()),
        _time("created_at"),
        sa.UniqueConstraint("run_id", "step", name="uq_checkpoints_run_step"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("run_id", sa.String(16), sa.ForeignKey("runs.id"), index=True),
        sa.Column("base_model", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("lineage", sa.JSON, nullable=False),
        _time("created_at"),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("current_run_id", sa.String(16)),
        _time("started_at"),
        _time("last_seen_at"),
    )


def downgrade() -> None:
    for table in ("workers", "model_versions", "checkpoints", "run_events"):
        op.drop_table(table)
    op.drop_index("ix_metrics_run_name_step", table_name="metrics")
    op.drop_table("metrics")
    op.drop_table("runs")
