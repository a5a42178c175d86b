"""checkpoint manifests: with a shared artifact store a complete checkpoint is uploaded as a folder
manifest, whose key is kept with its record, so a run resumes on a machine that never saw its folder

Revision ID: 0012_checkpoint_manifests
Revises: 0011_loop
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_checkpoint_manifests"
down_revision = "0011_loop"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("manifest", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("manifest")
