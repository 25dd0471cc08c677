"""persons

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "persons",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("id_type", sa.String(32), nullable=False),
        sa.Column("id_number", sa.String(64), nullable=False),
        sa.Column("name", sa.Unicode(100), nullable=False),
        sa.Column("login_name", sa.Unicode(16), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("id_type", "id_number", name="uq_persons_identity"),
        sa.UniqueConstraint("login_name", name="uq_persons_login_name"),
        sa.UniqueConstraint("phone", name="uq_persons_phone"),
    )


def downgrade() -> None:
    op.drop_table("persons")
