"""accounts: registration codes and registration records

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registration_codes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("id_type", sa.String(32), nullable=False),
        sa.Column("id_number", sa.String(64), nullable=False),
        sa.Column("name", sa.Unicode(100), nullable=False),
        sa.Column("nationality", sa.String(3), nullable=False),
        sa.Column("code_hash", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("issued_by", sa.String(40), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_registration_codes_identity", "registration_codes", ["id_type", "id_number"])
    op.create_table(
        "person_registrations",
        sa.Column("person_id", sa.String(40), sa.ForeignKey("persons.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("nationality", sa.String(3), nullable=False),
        sa.Column("household_region", sa.String(6), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("person_registrations")
    op.drop_index("ix_registration_codes_identity", table_name="registration_codes")
    op.drop_table("registration_codes")
