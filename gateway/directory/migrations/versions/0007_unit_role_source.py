"""where a unit role came from: assigned (hall, CLI) or an authorization (removed with it)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Roles from before were assigned by the hall, or made by a grant that cannot be told apart now:
    # kept as assigned (a revocation then leaves them, as it did).
    with op.batch_alter_table("unit_roles") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="assigned"))


def downgrade() -> None:
    with op.batch_alter_table("unit_roles") as batch:
        batch.drop_column("source")
