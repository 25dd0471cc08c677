"""relying parties authenticating with private_key_jwt: their JWKS, inline or by URI

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("relying_parties") as table:
        table.add_column(sa.Column("jwks", sa.Text, nullable=True))
        table.add_column(sa.Column("jwks_uri", sa.String(2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("relying_parties") as table:
        table.drop_column("jwks_uri")
        table.drop_column("jwks")
