"""Durable account records in SQL: registration codes, registrations, password changes.

Registration codes are stored as argon2id hashes (six characters are few enough to brute-force a
fast hash offline), with the identity they are bound to. Completing a registration marks the code
used and inserts the person in one transaction, so a code registers at most one person.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway import errors
from gateway.directory.persons import DatabaseUnavailable, Person, new_person_id
from gateway.directory.tables import person_registrations, persons, registration_codes
from gateway.rules import IdType

# Digits and capitals without look-alikes (0/O, 1/I/L): 31 symbols, 31**6 ~ 8.9e8 codes.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 6


def new_registration_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Identity:
    id_type: IdType
    id_number: str
    name: str
    nationality: str


@dataclass(frozen=True, slots=True)
class RegistrationCode:
    id: str
    identity: Identity
    code_hash: str
    expires_at: datetime


class Conflict(errors.Conflict):
    pass


@asynccontextmanager
async def _database() -> AsyncIterator[None]:
    try:
        yield
    except (OperationalError, OSError) as exc:
        raise DatabaseUnavailable("The directory database is unavailable.") from exc


def _person(row: sa.Row[tuple[object, ...]]) -> Person:
    return Person(
        id=str(row.id),
        id_type=IdType(row.id_type),
        id_number=str(row.id_number),
        name=str(row.name),
        login_name=str(row.login_name),
        phone=str(row.phone),
        password_hash=str(row.password_hash),
        password_temporary=bool(row.password_temporary),
    )


class AccountRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _first(self, query: sa.Select[tuple[object, ...]]) -> sa.Row[tuple[object, ...]] | None:
        async with _database(), self._engine.connect() as conn:
            return (await conn.execute(query)).first()

    async def person_by_identity(self, id_type: IdType, id_number: str) -> Person | None:
        row = await self._first(
            sa.select(persons).where(persons.c.id_type == id_type.value, persons.c.id_number == id_number)
        )
        return _person(row) if row is not None else None

    async def taken(self, *, login_name: str, phone: str, identity: Identity) -> Conflict | None:
        """Which unique field is already in use, as the error to answer with (None: all free)."""
        checks = [
            (persons.c.login_name == login_name, "login_name_taken", "This login name is taken; choose another."),
            (persons.c.phone == phone, "phone_taken", "This phone number belongs to another account."),
            (
                sa.and_(persons.c.id_type == identity.id_type.value, persons.c.id_number == identity.id_number),
                "person_exists",
                "This identity is already registered: log in, or reset the password if it is forgotten.",
            ),
        ]
        for condition, code, detail in checks:
            if await self._first(sa.select(persons.c.id).where(condition)) is not None:
                return Conflict(detail, code=code)
        return None

    # Registration codes ----------------------------------------------------------------------------
    async def issue_code(self, identity: Identity, code_hash: str, *, issued_by: str, ttl: int) -> datetime:
        """Store a new code for the identity; any older active code of it is superseded."""
        now = datetime.now(UTC)
        expires_at = now + timedelta(seconds=ttl)
        async with _database(), self._engine.begin() as conn:
            await conn.execute(
                registration_codes.update()
                .where(
                    registration_codes.c.id_type == identity.id_type.value,
                    registration_codes.c.id_number == identity.id_number,
                    registration_codes.c.state == "active",
                )
                .values(state="superseded")
            )
            await conn.execute(
                registration_codes.insert().values(
                    id="rc_" + secrets.token_urlsafe(16),
                    id_type=identity.id_type.value,
                    id_number=identity.id_number,
                    name=identity.name,
                    nationality=identity.nationality,
                    code_hash=code_hash,
                    state="active",
                    issued_by=issued_by,
                    issued_at=now,
                    expires_at=expires_at,
                )
            )
        return expires_at

    async def active_code(self, id_type: IdType, id_number: str) -> RegistrationCode | None:
        row = await self._first(
            sa.select(registration_codes)
            .where(
                registration_codes.c.id_type == id_type.value,
                registration_codes.c.id_number == id_number,
                registration_codes.c.state == "active",
            )
            .order_by(registration_codes.c.issued_at.desc())
            .limit(1)
        )
        if row is None:
            return None
        identity = Identity(IdType(row.id_type), row.id_number, row.name, row.nationality)
        return RegistrationCode(row.id, identity, row.code_hash, aware(row.expires_at))

    async def void_code(self, code_id: str) -> None:
        async with _database(), self._engine.begin() as conn:
            await conn.execute(
                registration_codes.update()
                .where(registration_codes.c.id == code_id, registration_codes.c.state == "active")
                .values(state="void")
            )

    # People ----------------------------------------------------------------------------------------
    async def register(
        self,
        identity: Identity,
        *,
        login_name: str,
        phone: str,
        password_hash: str,
        household_region: str | None,
        method: str,
        code_id: str | None,
        agreement_version: str | None,
        agreement_accepted_at: datetime | None,
    ) -> str:
        """Insert the person (and use up the hall code) in one transaction; returns the person id."""
        now = datetime.now(UTC)
        person_id = new_person_id()
        try:
            async with _database(), self._engine.begin() as conn:
                if code_id is not None:
                    await self._use_code(conn, code_id, now)
                await conn.execute(
                    persons.insert().values(
                        id=person_id,
                        id_type=identity.id_type.value,
                        id_number=identity.id_number,
                        name=identity.name,
                        login_name=login_name,
                        phone=phone,
                        password_hash=password_hash,
                        created_at=now,
                    )
                )
                await conn.execute(
                    person_registrations.insert().values(
                        person_id=person_id,
                        method=method,
                        nationality=identity.nationality,
                        household_region=household_region,
                        registered_at=now,
                        agreement_version=agreement_version,
                        agreement_accepted_at=agreement_accepted_at,
                    )
                )
        except IntegrityError as exc:
            taken = await self.taken(login_name=login_name, phone=phone, identity=identity)
            raise taken or Conflict("The account could not be created; try again.", code="person_exists") from exc
        return person_id

    async def _use_code(self, conn: AsyncConnection, code_id: str, now: datetime) -> None:
        used = await conn.execute(
            registration_codes.update()
            .where(registration_codes.c.id == code_id, registration_codes.c.state == "active")
            .values(state="used", used_at=now)
        )
        if used.rowcount != 1:
            raise Conflict(
                "This registration code is no longer valid (used, replaced or void); ask the hall for a new one.",
                code="registration_code_used",
            )

    async def set_password(self, person_id: str, password_hash: str, *, temporary: bool = False) -> None:
        """A new password; `temporary` (set by hall staff): the next login must change it."""
        now = datetime.now(UTC)
        async with _database(), self._engine.begin() as conn:
            changed = await conn.execute(
                persons.update()
                .where(persons.c.id == person_id)
                .values(password_hash=password_hash, password_temporary=temporary)
            )
            if changed.rowcount != 1:
                raise errors.NotFound("No such person.", code="person_not_found")
            await conn.execute(
                person_registrations.update()
                .where(person_registrations.c.person_id == person_id)
                .values(password_changed_at=now)
            )
