"""tune studies: oikyo's record of a hyperparameter study, and runs tagged with their study and trial

Revision ID: 0007_tune_studies
Revises: 0006_human_ratings
Create Date: 2026-12-06

Optuna keeps its own tables (studies, trials, ... and its own alembic_version) elsewhere: a schema
``optuna`` on PostgreSQL, a file ``optuna.db`` beside ``oikyo.db`` on SQLite (see
oikyo.tune.study.optuna_storage); this table is oikyo's record of the study.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_tune_studies"
down_revision = "0006_human_ratings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tune_studies",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("optuna_name", sa.String(200), nullable=False, unique=True),
        sa.Column("base_config", sa.JSON, nullable=False),
        sa.Column("space", sa.JSON, nullable=False),
        sa.Column("objectives", sa.JSON, nullable=False),
        sa.Column("directions", sa.JSON, nullable=False),
        sa.Column("sampler", sa.String(16), nullable=False),
        sa.Column("pruner", sa.String(16), nullable=False),
        sa.Column("cv", sa.Integer),
        sa.Column("fold_datasets", sa.JSON),
        sa.Column("n_trials", sa.Integer, nullable=False),
        sa.Column("parallel", sa.Integer, nullable=False),
        sa.Column("budget", sa.String(32)),
        sa.Column("seed", sa.Integer),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("launched", sa.Integer, nullable=False, server_default="0"),
        sa.Column("dataset_version_id", sa.String(16), sa.ForeignKey("dataset_versions.id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    # Nullable tags: a run launched by a study's trial (ordinary runs leave them empty).
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("study_id", sa.String(16)))
        batch.add_column(sa.Column("trial_number", sa.Integer))
        batch.create_index("ix_runs_study_trial", ["study_id", "trial_number"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_study_trial")
        batch.drop_column("trial_number")
        batch.drop_column("study_id")
    op.drop_table("tune_studies")
