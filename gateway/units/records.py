"""Units, the roles of persons in them, and authorizations, in SQL (SQLAlchemy Core)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import errors
from gateway.directory.persons import DatabaseUnavailable
from gateway.units.rules import UnitRole
from gateway.units.tables import unit_authorizations, unit_roles, units

# `unit_roles.granted_by` of a role a person gave themself by the first unit link (docs/units.md).
LINKED = "link"


class UnitExists(errors.Conflict):
    code = "unit_exists"


class UnitNotFound(errors.NotFound):
    code = "unit_not_found"


@dataclass(frozen=True, slots=True)
class Unit:
    tin: str
    name: str
    password_hash: str | None


@dataclass(frozen=True, slots=True)
class Membership:
    """A person's role in a unit."""

    tin: str
    name: str
    role: UnitRole
    password_set: bool


@dataclass(frozen=True, slots=True)
class Authorization:
    id: str
    tin: str
    grantor_id: str
    grantee_id: str
    created_at: datetime
    valid_until: datetime
    revoked_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.valid_until


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes: every stored moment is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _authorization(row: sa.Row[tuple[object, ...]]) -> Authorization:
    mapping = row._mapping
    revoked = mapping["revoked_at"]
    return Authorization(
        id=mapping["id"],
        tin=mapping["tin"],
        grantor_id=mapping["grantor_id"],
        grantee_id=mapping["grantee_id"],
        created_at=_aware(mapping["created_at"]),
        valid_until=_aware(mapping["valid_until"]),
        revoked_at=_aware(revoked) if revoked is not None else None,
    )


_MEMBERSHIP = sa.select(units.c.tin, units.c.name, unit_roles.c.role, units.c.declaration_password_hash).join(
    unit_roles, unit_roles.c.tin == units.c.tin
)


# Where a unit role came from (unit_roles.source).
ASSIGNED = "assigned"  # hall staff or the CLI
AUTHORIZATION = "authorization"  # made by a grant to a person with no role in the unit


class UnitRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as conn:
                yield conn
        except (OperationalError, OSError) as exc:
            raise DatabaseUnavailable("The units database is unavailable.") from exc

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except (OperationalError, OSError) as exc:
            raise DatabaseUnavailable("The units database is unavailable.") from exc

    # Units --------------------------------------------------------------------------------------
    async def create(self, *, tin: str, name: str, password_hash: str | None, created_by: str) -> None:
        now = datetime.now(UTC)
        row = {
            "tin": tin,
            "name": name,
            "declaration_password_hash": password_hash,
            "password_changed_at": now if password_hash else None,
            "created_at": now,
            "created_by": created_by,
        }
        try:
            async with self._writing() as conn:
                await conn.execute(units.insert().values(**row))
        except IntegrityError as exc:
            raise UnitExists(f"A unit with the TIN {tin} exists already.") from exc

    async def get(self, tin: str) -> Unit | None:
        async with self._reading() as conn:
            row = (await conn.execute(sa.select(units).where(units.c.tin == tin))).first()
        if row is None:
            return None
        return Unit(row.tin, row.name, row.declaration_password_hash)

    async def set_password_hash(self, tin: str, password_hash: str) -> bool:
        """Replace the declaration password's hash; False when there is no such unit."""
        query = (
            units.update()
            .where(units.c.tin == tin)
            .values(declaration_password_hash=password_hash, password_changed_at=datetime.now(UTC))
        )
        async with self._writing() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    # Roles --------------------------------------------------------------------------------------
    async def membership(self, tin: str, person_id: str) -> Membership | None:
        query = _MEMBERSHIP.where(units.c.tin == tin, unit_roles.c.person_id == person_id)
        async with self._reading() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Membership(row.tin, row.name, UnitRole(row.role), row.declaration_password_hash is not None)

    async def memberships(self, person_id: str) -> list[Membership]:
        query = _MEMBERSHIP.where(unit_roles.c.person_id == person_id).order_by(units.c.name, units.c.tin)
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
        return [Membership(r.tin, r.name, UnitRole(r.role), r.declaration_password_hash is not None) for r in rows]

    async def assign_role(self, tin: str, person_id: str, role: UnitRole, *, granted_by: str) -> str | None:
        """Give the person this role in the unit (replacing the role they had). A unit has one legal
        representative: naming a new one takes the role from the previous holder, whose id is returned."""
        displaced: str | None = None
        try:
            async with self._writing() as conn:
                if (await conn.execute(sa.select(units.c.tin).where(units.c.tin == tin))).first() is None:
                    raise UnitNotFound(f"There is no unit with the TIN {tin}.")
                if role is UnitRole.LEGAL_REP:
                    previous = await conn.execute(
                        sa.select(unit_roles.c.person_id).where(
                            unit_roles.c.tin == tin,
                            unit_roles.c.role == UnitRole.LEGAL_REP.value,
                            unit_roles.c.person_id != person_id,
                        )
                    )
                    displaced = previous.scalar()
                    if displaced is not None:
                        await conn.execute(
                            unit_roles.delete().where(unit_roles.c.tin == tin, unit_roles.c.person_id == displaced)
                        )
                await self._set_role(conn, tin, person_id, role, granted_by)
        except IntegrityError as exc:
            raise errors.Conflict(
                "The unit's roles were changed at the same moment; try again.", code="role_conflict"
            ) from exc
        return displaced

    @staticmethod
    async def _set_role(
        conn: AsyncConnection, tin: str, person_id: str, role: UnitRole, granted_by: str, source: str = ASSIGNED
    ) -> None:
        """`source`: where the role came from (ASSIGNED by the hall or the CLI, or AUTHORIZATION); a
        role assigned over one an authorization made is the hall's from then on."""
        where = (unit_roles.c.tin == tin, unit_roles.c.person_id == person_id)
        values = {"role": role.value, "granted_at": datetime.now(UTC), "granted_by": granted_by, "source": source}
        updated = await conn.execute(unit_roles.update().where(*where).values(**values))
        if not updated.rowcount:
            await conn.execute(unit_roles.insert().values(tin=tin, person_id=person_id, **values))

    async def link(self, tin: str, person_id: str) -> Membership | None:
        """The first unit link: the person becomes the unit's tax staff, with `granted_by` = `LINKED`
        (the role came from the person's own declaration password, not from hall staff or an
        authorization). A person who has a role in the unit already keeps it. Returns the membership;
        None when the unit is gone."""
        try:
            async with self._writing() as conn:
                if (await conn.execute(sa.select(units.c.tin).where(units.c.tin == tin))).first() is None:
                    return None
                has_role = await conn.execute(
                    sa.select(unit_roles.c.role).where(unit_roles.c.tin == tin, unit_roles.c.person_id == person_id)
                )
                if has_role.first() is None:
                    values = {"role": UnitRole.TAX_STAFF.value, "granted_at": datetime.now(UTC), "granted_by": LINKED}
                    await conn.execute(unit_roles.insert().values(tin=tin, person_id=person_id, **values))
        except IntegrityError:
            pass  # the same person linked at the same moment by another request: their role is there
        return await self.membership(tin, person_id)

    async def remove_role(self, tin: str, person_id: str) -> bool:
        query = unit_roles.delete().where(unit_roles.c.tin == tin, unit_roles.c.person_id == person_id)
        async with self._writing() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    # Authorizations ---------------------------------------------------------------------------------
    async def grant(self, *, tin: str, grantor_id: str, grantee_id: str, valid_until: datetime) -> Authorization:
        """Authorize the grantee for the unit; a grantee with no role in it becomes its tax staff."""
        record = Authorization(
            id="a_" + secrets.token_urlsafe(16),
            tin=tin,
            grantor_id=grantor_id,
            grantee_id=grantee_id,
            created_at=datetime.now(UTC),
            valid_until=valid_until.astimezone(UTC),
            revoked_at=None,
        )
        try:
            async with self._writing() as conn:
                has_role = await conn.execute(
                    sa.select(unit_roles.c.role).where(unit_roles.c.tin == tin, unit_roles.c.person_id == grantee_id)
                )
                if has_role.first() is None:
                    await self._set_role(conn, tin, grantee_id, UnitRole.TAX_STAFF, grantor_id, AUTHORIZATION)
                await conn.execute(
                    unit_authorizations.insert().values(
                        id=record.id,
                        tin=tin,
                        grantor_id=grantor_id,
                        grantee_id=grantee_id,
                        created_at=record.created_at,
                        valid_until=record.valid_until,
                    )
                )
        except IntegrityError as exc:
            raise errors.Conflict(
                "The unit's roles were changed at the same moment; try again.", code="role_conflict"
            ) from exc
        return record

    async def authorizations(self, tin: str, *, limit: int = 200) -> list[Authorization]:
        query = (
            sa.select(unit_authorizations)
            .where(unit_authorizations.c.tin == tin)
            .order_by(unit_authorizations.c.created_at.desc(), unit_authorizations.c.id)
            .limit(limit)
        )
        async with self._reading() as conn:
            return [_authorization(row) for row in (await conn.execute(query)).all()]

    async def active_authorizations(self, person_id: str, now: datetime) -> dict[str, datetime]:
        """The units this person holds a live authorization for, each with its latest end."""
        query = (
            sa.select(unit_authorizations.c.tin, sa.func.max(unit_authorizations.c.valid_until).label("until"))
            .where(
                unit_authorizations.c.grantee_id == person_id,
                unit_authorizations.c.revoked_at.is_(None),
                unit_authorizations.c.valid_until > now,
            )
            .group_by(unit_authorizations.c.tin)
        )
        async with self._reading() as conn:
            return {row.tin: _aware(row.until) for row in (await conn.execute(query)).all()}

    async def active_authorization(self, tin: str, person_id: str, now: datetime) -> Authorization | None:
        query = (
            sa.select(unit_authorizations)
            .where(
                unit_authorizations.c.tin == tin,
                unit_authorizations.c.grantee_id == person_id,
                unit_authorizations.c.revoked_at.is_(None),
                unit_authorizations.c.valid_until > now,
            )
            .order_by(unit_authorizations.c.valid_until.desc())
            .limit(1)
        )
        async with self._reading() as conn:
            row = (await conn.execute(query)).first()
        return _authorization(row) if row is not None else None

    async def revoke(self, tin: str, authorization_id: str, *, revoked_by: str) -> tuple[Authorization | None, bool]:
        """Revoke (once: revoking again changes nothing); (None, False) when the unit has no such
        authorization. When it was the grantee's last live authorization for the unit, the tax-staff role
        an authorization made goes with it (never a role the hall assigned): then (record, True)."""
        where = (unit_authorizations.c.tin == tin, unit_authorizations.c.id == authorization_id)
        now = datetime.now(UTC)
        role_removed = False
        async with self._writing() as conn:
            revoked = await conn.execute(
                unit_authorizations.update()
                .where(*where, unit_authorizations.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_by=revoked_by)
            )
            row = (await conn.execute(sa.select(unit_authorizations).where(*where))).first()
            if row is not None and revoked.rowcount:
                others = await conn.execute(
                    sa.select(unit_authorizations.c.id).where(
                        unit_authorizations.c.tin == tin,
                        unit_authorizations.c.grantee_id == row.grantee_id,
                        unit_authorizations.c.revoked_at.is_(None),
                        unit_authorizations.c.valid_until > now,
                    )
                )
                if others.first() is None:
                    removed = await conn.execute(
                        unit_roles.delete().where(
                            unit_roles.c.tin == tin,
                            unit_roles.c.person_id == row.grantee_id,
                            unit_roles.c.role == UnitRole.TAX_STAFF.value,
                            unit_roles.c.source == AUTHORIZATION,
                        )
                    )
                    role_removed = bool(removed.rowcount)
        return (_authorization(row) if row is not None else None), role_removed
