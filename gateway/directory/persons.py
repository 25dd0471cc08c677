"""People in the durable directory: who they are and how they log in."""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import errors
from gateway.directory.tables import person_roles, persons
from gateway.rules import IdType


class DatabaseUnavailable(errors.ServiceUnavailable):
    code = "database_unavailable"


class DuplicatePerson(errors.Conflict):
    code = "person_exists"


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    id_type: IdType
    id_number: str
    name: str
    login_name: str
    phone: str
    password_hash: str
    password_temporary: bool = False  # set by hall staff: to be changed at the next login


def new_person_id() -> str:
    """Opaque, random, and free of personal data: this is what tokens carry as `sub`."""
    return "p_" + secrets.token_urlsafe(16)


class PersonDirectory:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(
        self,
        *,
        id_type: IdType,
        id_number: str,
        name: str,
        login_name: str,
        phone: str,
        password_hash: str,
    ) -> str:
        person_id = new_person_id()
        row = {
            "id": person_id,
            "id_type": id_type.value,
            "id_number": id_number,
            "name": name,
            "login_name": login_name,
            "phone": phone,
            "password_hash": password_hash,
            "created_at": datetime.now(UTC),
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(persons.insert().values(**row))
        except IntegrityError as exc:
            raise DuplicatePerson("A person with this ID number, login name or phone already exists.") from exc
        except (OperationalError, OSError) as exc:
            raise DatabaseUnavailable("The directory database is unavailable.") from exc
        return person_id

    async def get(self, person_id: str) -> Person | None:
        return await self._one(persons.c.id == person_id)

    async def find_by_identifier(self, identifier: str) -> Person | None:
        """Phone, login name, or resident ID number. Login names are never all digits, phones are
        11 digits, resident ID numbers 18 characters: the three never collide."""
        value = unicodedata.normalize("NFC", identifier.strip())
        if value.isdigit() and len(value) == 11:
            return await self._one(persons.c.phone == value)
        if len(value) == 18 and value[:17].isdigit():
            return await self._one(
                sa.and_(persons.c.id_type == IdType.RESIDENT_ID.value, persons.c.id_number == value.upper())
            )
        return await self._one(persons.c.login_name == value)

    async def roles_of(self, person_id: str) -> list[str]:
        query = (
            sa.select(person_roles.c.role).where(person_roles.c.person_id == person_id).order_by(person_roles.c.role)
        )
        try:
            async with self._engine.connect() as conn:
                return [row.role for row in await conn.execute(query)]
        except (OperationalError, OSError) as exc:
            raise DatabaseUnavailable("The directory database is unavailable.") from exc

    async def grant_role(self, person_id: str, role: str) -> None:
        row = {"person_id": person_id, "role": role, "granted_at": datetime.now(UTC)}
        try:
            async with self._engine.begin() as conn:
                person = await conn.execute(sa.select(persons.c.id).where(persons.c.id == person_id))
                if person.first() is None:
                    raise errors.NotFound("No such person.", code="person_not_found")
                exists = await conn.execute(
                    sa.select(person_roles.c.role).where(
                        person_roles.c.person_id == person_id, person_roles.c.role == role
                    )
                )
                if exists.first() is None:
                    await conn.execute(person_roles.insert().values(**row))
        except IntegrityError as exc:
            raise errors.NotFound("No such person.", code="person_not_found") from exc
        except (OperationalError, OSError) as exc:
            raise DatabaseUnavailable("The directory database is unavailable.") from exc

    async def _one(self, condition: sa.ColumnElement[bool]) -> Person | None:
        try:
            async with self._engine.connect() as conn:
                row = (await conn.execute(sa.select(persons).where(condition))).first()
        except (OperationalError, OSError) as exc:
            raise DatabaseUnavailable("The directory database is unavailable.") from exc
        if row is None:
            return None
        return Person(
            id=row.id,
            id_type=IdType(row.id_type),
            id_number=row.id_number,
            name=row.name,
            login_name=row.login_name,
            phone=row.phone,
            password_hash=row.password_hash,
            password_temporary=bool(row.password_temporary),
        )
