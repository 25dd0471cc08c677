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
    sa.UniqueConstraint("id_type", "id_number", name="uq_persons_identity"),
    sa.UniqueConstraint("login_name", name="uq_persons_login_name"),
    sa.UniqueConstraint("phone", name="uq_persons_phone"),
)
