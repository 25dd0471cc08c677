"""The durable directory on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.directory.db import _alembic_config, create_engine, current_revision, head_revision, migrate
from gateway.directory.persons import DuplicatePerson, PersonDirectory
from gateway.directory.tables import person_registrations, persons
from gateway.rules import IdType
from tests.support.databases import fresh_database

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with fresh_database(request.param, tmp_path) as url:
        engine = create_engine(url)
        try:
            yield engine
        finally:
            await engine.dispose()


async def add(directory: PersonDirectory, n: int, **overrides: str) -> str:
    fields: dict[str, str] = {
        "id_number": f"11010519491231{n:03d}X",
        "name": "张三",
        "login_name": f"user_{n}",
        "phone": f"1380000{n:04d}",
        **overrides,
    }
    return await directory.add(id_type=IdType.RESIDENT_ID, password_hash="$argon2id$placeholder", **fields)


async def test_migrations_are_idempotent_and_concurrent(engine: AsyncEngine) -> None:
    await asyncio.gather(migrate(engine), migrate(engine))
    await migrate(engine)
    head = head_revision()
    assert head is not None
    assert int(head) >= 2
    assert await current_revision(engine) == head


async def test_find_by_each_identifier(engine: AsyncEngine) -> None:
    await migrate(engine)
    directory = PersonDirectory(engine)
    person_id = await add(directory, 1)
    assert person_id.startswith("p_")
    for identifier in ("user_1", "13800000001", "11010519491231001X", "11010519491231001x"):
        found = await directory.find_by_identifier(identifier)
        assert found is not None, identifier
        assert found.id == person_id
    assert await directory.find_by_identifier("nobody") is None
    assert (await directory.get(person_id)) == (await directory.find_by_identifier("user_1"))


async def test_login_names_are_case_sensitive(engine: AsyncEngine) -> None:
    await migrate(engine)
    directory = PersonDirectory(engine)
    lower = await add(directory, 2, login_name="alice")
    upper = await add(directory, 3, login_name="Alice")
    assert lower != upper
    found = await directory.find_by_identifier("Alice")
    assert found is not None
    assert found.id == upper


async def test_id_number_login_only_for_resident_id(engine: AsyncEngine) -> None:
    await migrate(engine)
    directory = PersonDirectory(engine)
    await directory.add(
        id_type=IdType.PASSPORT,
        id_number="110105194912310049",  # looks like a resident ID, but is a passport number
        name="Anna",
        login_name="anna_p",
        phone="13900000049",
        password_hash="$argon2id$placeholder",
    )
    assert await directory.find_by_identifier("110105194912310049") is None
    assert await directory.find_by_identifier("anna_p") is not None


async def test_duplicates_are_refused(engine: AsyncEngine) -> None:
    await migrate(engine)
    directory = PersonDirectory(engine)
    await add(directory, 4)
    for clash in ({"login_name": "user_4"}, {"phone": "13800000004"}, {"id_number": "11010519491231004X"}):
        fields = {"id_number": "11010519491231005X", "login_name": "user_5", "phone": "13800000005", **clash}
        with pytest.raises(DuplicatePerson):
            await add(directory, 5, **fields)


@pytest.mark.parametrize("name", ["吉𠮷", "𪚥", "Zoë", "欧阳娜娜"])
async def test_names_from_every_plane_round_trip(engine: AsyncEngine, name: str) -> None:
    await migrate(engine)
    directory = PersonDirectory(engine)
    person_id = await add(directory, 6, name=name)
    person = await directory.get(person_id)
    assert person is not None
    assert person.name == name


async def test_roles_and_audit(engine: AsyncEngine) -> None:
    from gateway.directory.audit import AuditLog

    await migrate(engine)
    directory = PersonDirectory(engine)
    person_id = await add(directory, 7)
    assert await directory.roles_of(person_id) == []
    await directory.grant_role(person_id, "hall_staff")
    await directory.grant_role(person_id, "hall_staff")
    assert await directory.roles_of(person_id) == ["hall_staff"]
    audit = AuditLog(engine)
    await audit.record("login_locked", person_id, detail="5 wrong passwords")
    await audit.record("login_unlocked", person_id, actor="p_staff")
    events = await audit.events(person_id)
    assert [e.kind for e in events] == ["login_unlocked", "login_locked"]
    assert events[0].actor == "p_staff"


async def test_migration_0008_keeps_people_and_their_registrations(engine: AsyncEngine) -> None:
    """People registered before 0008: their passwords are not temporary, their region stays, and no
    agreement is recorded for them (NULL); afterwards a region may be absent."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), "0005"))
        now = datetime.now(UTC)
        await conn.execute(
            sa.text(
                "INSERT INTO persons (id, id_type, id_number, name, login_name, phone, password_hash, created_at)"
                " VALUES ('p_old', 'resident_id', '11010519491231002X', '王五', 'old_user', '13800009999', 'x', :now)"
            ),
            {"now": now},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO person_registrations (person_id, method, nationality, household_region, registered_at)"
                " VALUES ('p_old', 'hall_code', 'CHN', '110105', :now)"
            ),
            {"now": now},
        )
    await migrate(engine)
    assert await current_revision(engine) == head_revision()
    async with engine.begin() as conn:
        person = (await conn.execute(sa.select(persons).where(persons.c.id == "p_old"))).one()
        assert not person.password_temporary
        registration = (await conn.execute(sa.select(person_registrations))).one()
        assert (registration.household_region, registration.agreement_version) == ("110105", None)
        await conn.execute(person_registrations.update().values(household_region=None))  # now nullable
    found = await PersonDirectory(engine).get("p_old")
    assert found is not None
    assert found.password_temporary is False
