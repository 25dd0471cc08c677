"""The durable directory's tables (SQLAlchemy Core). Alembic migrations create them; this module
is what queries are written against."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

persons = sa.Table(
    "persons",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("id_type", sa.String(32), nullable=False),
    sa.Column("id_number", sa.String(64), nullable=False),
    sa.Column("name", sa.Unicode(100), nullable=False),
    sa.Column("login_name", sa.Unicode(16), nullable=False),
    sa.Column("phone", sa.String(20), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Set by hall staff (a temporary password): the next login must change it (migration 0008).
    sa.Column("password_temporary", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("id_type", "id_number", name="uq_persons_identity"),
    sa.UniqueConstraint("login_name", name="uq_persons_login_name"),
    sa.UniqueConstraint("phone", name="uq_persons_phone"),
)

person_roles = sa.Table(
    "person_roles",
    metadata,
    sa.Column("person_id", sa.String(40), sa.ForeignKey("persons.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(32), primary_key=True),
    sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("kind", sa.String(48), nullable=False),
    sa.Column("subject", sa.String(80), nullable=False, index=True),
    sa.Column("actor", sa.String(80), nullable=True),
    sa.Column("detail", sa.Unicode(400), nullable=False, server_default=""),
)

# Accounts (migration 0003) ------------------------------------------------------------------------
registration_codes = sa.Table(
    "registration_codes",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("id_type", sa.String(32), nullable=False),
    sa.Column("id_number", sa.String(64), nullable=False),
    sa.Column("name", sa.Unicode(100), nullable=False),
    sa.Column("nationality", sa.String(3), nullable=False),
    sa.Column("code_hash", sa.String(255), nullable=False),  # argon2id of the 6-character code
    sa.Column("state", sa.String(16), nullable=False),  # active | used | superseded | void
    sa.Column("issued_by", sa.String(40), nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_registration_codes_identity", "id_type", "id_number"),
)

person_registrations = sa.Table(
    "person_registrations",
    metadata,
    sa.Column("person_id", sa.String(40), sa.ForeignKey("persons.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("method", sa.String(16), nullable=False),  # hall_code | face
    sa.Column("nationality", sa.String(3), nullable=False),
    sa.Column("household_region", sa.String(6), nullable=True),  # NULL: no mainland household (0006)
    sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
    # The registration agreement accepted (【同意并继续】) and when (migration 0008; NULL before it).
    sa.Column("agreement_version", sa.String(32), nullable=True),
    sa.Column("agreement_accepted_at", sa.DateTime(timezone=True), nullable=True),
)

# Relying parties of the OpenID Connect provider (migration 0005) ----------------------------------
relying_parties = sa.Table(
    "relying_parties",
    metadata,
    sa.Column("client_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Unicode(100), nullable=False),  # shown on the sign-in page: 登录到 {name}
    sa.Column("secret_hash", sa.String(64), nullable=True),  # SHA-256 of the secret; NULL: a public client
    sa.Column("redirect_uris", sa.Text, nullable=False),  # JSON lists, matched exactly
    sa.Column("post_logout_redirect_uris", sa.Text, nullable=False),
    sa.Column("backchannel_logout_uri", sa.String(2000), nullable=True),
    sa.Column("scopes", sa.Text, nullable=False),  # space-separated: what it may ask for
    sa.Column("id_token_alg", sa.String(16), nullable=True),  # "RS256"; NULL: the gateway's signing algorithm
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # private_key_jwt (migration 0006): its public JWKS (JSON) and/or where to fetch it
    sa.Column("jwks", sa.Text, nullable=True),
    sa.Column("jwks_uri", sa.String(2000), nullable=True),
)
