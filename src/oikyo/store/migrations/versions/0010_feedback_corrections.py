"""feedback corrections: feedback may carry the ideal answer (``correction``), and then needs no rating

Revision ID: 0010_feedback_corrections
Revises: 0009_monitoring
Create Date: 2026-12-13
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_feedback_corrections"
down_revision = "0009_monitoring"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot drop NOT NULL in place, so the table is copied (its indexes kept).
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("correction", sa.Text))
        batch.alter_column("rating", existing_type=sa.Float, nullable=True)


def downgrade() -> None:
    # Feedback without a rating cannot exist in the older schema: it is deleted, the corrections dropped.
    op.execute("DELETE FROM feedback WHERE rating IS NULL")
    with op.batch_alter_table("feedback") as batch:
        batch.alter_column("rating", existing_type=sa.Float, nullable=False)
        batch.drop_column("correction")
