"""registration agreement, optional household region, temporary passwords

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08

- person_registrations.agreement_version / agreement_accepted_at: the registration agreement the
  person accepted (【同意并继续】), and when; NULL for people registered before it was recorded.
- person_registrations.household_region: NULL for people without a mainland household (only
  resident ID card holders are asked for it).
- persons.password_temporary: the password was set by hall staff and must be changed at the next
  login.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("person_registrations") as batch:  # SQLite rebuilds the table
        batch.alter_column("household_region", existing_type=sa.String(6), nullable=True)
        batch.add_column(sa.Column("agreement_version", sa.String(32), nullable=True))
        batch.add_column(sa.Column("agreement_accepted_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("persons") as batch:
        batch.add_column(sa.Column("password_temporary", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("persons") as batch:
        batch.drop_column("password_temporary")
    with op.batch_alter_table("person_registrations") as batch:
        batch.drop_column("agreement_accepted_at")
        batch.drop_column("agreement_version")
        batch.alter_column("household_region", existing_type=sa.String(6), nullable=False)
