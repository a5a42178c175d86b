"""tune promotions: a study's chosen trial trained as the final model and evaluated once on the test split

Revision ID: 0008_tune_promotions
Revises: 0007_tune_studies
Create Date: 2026-12-06

One row per promoted trial (unique study + trial), so the test split of a study is evaluated once
per promoted trial however often or from however many machines ``oikyo tune promote`` is run.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_tune_promotions"
down_revision = "0007_tune_studies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tune_promotions",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("study_id", sa.String(16), sa.ForeignKey("tune_studies.id"), nullable=False),
        sa.Column("trial_number", sa.Integer, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("run_id", sa.String(16)),
        sa.Column("eval_job_id", sa.String(16)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("study_id", "trial_number", name="uq_tune_promotions_trial"),
    )


def downgrade() -> None:
    op.drop_table("tune_promotions")
