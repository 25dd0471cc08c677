"""units: units, roles of persons in units, authorizations (the unit-verification service)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "units",
        sa.Column("tin", sa.String(18), primary_key=True),
        sa.Column("name", sa.Unicode(200), nullable=False),
        sa.Column("declaration_password_hash", sa.String(255), nullable=True),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(40), nullable=False),
    )
    op.create_table(
        "unit_roles",
        sa.Column("tin", sa.String(18), sa.ForeignKey("units.tin", ondelete="CASCADE"), primary_key=True),
        sa.Column("person_id", sa.String(40), sa.ForeignKey("persons.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.String(40), nullable=False),
    )
    op.create_index("ix_unit_roles_person", "unit_roles", ["person_id"])
    op.create_index(
        "uq_unit_roles_legal_rep",
        "unit_roles",
        ["tin"],
        unique=True,
        sqlite_where=sa.text("role = 'legal_rep'"),
        postgresql_where=sa.text("role = 'legal_rep'"),
    )
    op.create_table(
        "unit_authorizations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tin", sa.String(18), sa.ForeignKey("units.tin", ondelete="CASCADE"), nullable=False),
        sa.Column("grantor_id", sa.String(40), sa.ForeignKey("persons.id", ondelete="CASCADE"), nullable=False),
        sa.Column("grantee_id", sa.String(40), sa.ForeignKey("persons.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(40), nullable=True),
    )
    op.create_index("ix_unit_authorizations_grantee", "unit_authorizations", ["grantee_id", "tin"])
    op.create_index("ix_unit_authorizations_tin", "unit_authorizations", ["tin"])


def downgrade() -> None:
    op.drop_index("ix_unit_authorizations_tin", table_name="unit_authorizations")
    op.drop_index("ix_unit_authorizations_grantee", table_name="unit_authorizations")
    op.drop_table("unit_authorizations")
    op.drop_index("uq_unit_roles_legal_rep", table_name="unit_roles")
    op.drop_index("ix_unit_roles_person", table_name="unit_roles")
    op.drop_table("unit_roles")
    op.drop_table("units")
