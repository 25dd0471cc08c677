"""The units service's tables (migration 0004), on the directory's metadata: one database, one
migration chain, but these tables are written by the units service alone. It reads `persons` only to
resolve a person named by hall staff or a legal representative."""

from __future__ import annotations

import sqlalchemy as sa

from gateway.directory.tables import metadata

units = sa.Table(
    "units",
    metadata,
    sa.Column("tin", sa.String(18), primary_key=True),  # unified social credit code
    sa.Column("name", sa.Unicode(200), nullable=False),
    sa.Column("declaration_password_hash", sa.String(255), nullable=True),  # argon2id; null until set
    sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(40), nullable=False),  # a hall staff person id, or "cli"
)

unit_roles = sa.Table(
    "unit_roles",
    metadata,
    sa.Column("tin", sa.String(18), sa.ForeignKey("units.tin", ondelete="CASCADE"), primary_key=True),
    sa.Column("person_id", sa.String(40), sa.ForeignKey("persons.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),  # legal_rep | finance_manager | tax_staff
    sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
    # A hall staff person id, a legal representative's (an authorization), "cli", or "link": the person
    # linked themself with the unit's declaration password (the first unit link, gateway/units/linking.py).
    sa.Column("granted_by", sa.String(40), nullable=False),
    # assigned (hall staff, the CLI) | authorization (made by a grant: removed when its last one is revoked)
    sa.Column("source", sa.String(16), nullable=False, server_default="assigned"),
    sa.Index("ix_unit_roles_person", "person_id"),
    # A unit has at most one legal representative.
    sa.Index(
        "uq_unit_roles_legal_rep",
        "tin",
        unique=True,
        sqlite_where=sa.text("role = 'legal_rep'"),
        postgresql_where=sa.text("role = 'legal_rep'"),
    ),
)

unit_authorizations = sa.Table(
    "unit_authorizations",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tin", sa.String(18), sa.ForeignKey("units.tin", ondelete="CASCADE"), nullable=False),
    sa.Column("grantor_id", sa.String(40), sa.ForeignKey("persons.id", ondelete="CASCADE"), nullable=False),
    sa.Column("grantee_id", sa.String(40), sa.ForeignKey("persons.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_by", sa.String(40), nullable=True),
    sa.Index("ix_unit_authorizations_grantee", "grantee_id", "tin"),
    sa.Index("ix_unit_authorizations_tin", "tin"),
)
