"""deployments: served endpoints, API keys (hashed), served requests and feedback

Revision ID: 0005_deployments
Revises: 0004_evaluations
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_deployments"
down_revision = "0004_evaluations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("variants", sa.JSON, nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("replicas_min", sa.Integer, nullable=False, server_default="1"),
        sa.Column("replicas_max", sa.Integer, nullable=False, server_default="1"),
        sa.Column("engine", sa.String(16), nullable=False, server_default="native"),
        sa.Column("log_requests", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pid", sa.Integer),
        sa.Column("hostname", sa.String(200)),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("stopped_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "served_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("deployment", sa.String(100), nullable=False),
        sa.Column("variant", sa.String(200)),
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("stream", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("ttft_s", sa.Float),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("request", sa.JSON),
        sa.Column("response", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_served_requests_deployment_created", "served_requests", ["deployment", "created_at"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("deployment", sa.String(100), nullable=False, index=True),
        sa.Column("response_id", sa.String(64), nullable=False, index=True),
        sa.Column("variant", sa.String(200)),
        sa.Column("rating", sa.Float, nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_index("ix_served_requests_deployment_created", table_name="served_requests")
    op.drop_table("served_requests")
    op.drop_table("api_keys")
    op.drop_table("deployments")
