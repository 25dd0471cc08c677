"""The units tables (migration 0004) and their queries on SQLite and on a real PostgreSQL server:
roles (one legal representative per unit), authorizations and their time windows, revocation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.directory.db import create_engine, migrate
from gateway.directory.persons import PersonDirectory
from gateway.rules import IdType
from gateway.units.records import UnitExists, UnitNotFound, UnitRecords
from gateway.units.rules import UnitRole
from tests.support.databases import fresh_database
from tests.support.units import new_tin

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with fresh_database(request.param, tmp_path) as url:
        engine = create_engine(url)
        try:
            await migrate(engine)
            yield engine
        finally:
            await engine.dispose()


async def people(engine: AsyncEngine, count: int) -> list[str]:
    directory = PersonDirectory(engine)
    return [
        await directory.add(
            id_type=IdType.RESIDENT_ID,
            id_number=f"11010519491231{n:03d}X",
            name="张三",
            login_name=f"user_{n}",
            phone=f"1380000{n:04d}",
            password_hash="$argon2id$placeholder",
        )
        for n in range(count)
    ]


async def test_units_and_roles(engine: AsyncEngine) -> None:
    records = UnitRecords(engine)
    boss, successor, clerk = await people(engine, 3)
    tin = new_tin()
    await records.create(tin=tin, name="某某有限公司", password_hash=None, created_by="cli")
    with pytest.raises(UnitExists):
        await records.create(tin=tin, name="again", password_hash=None, created_by="cli")
    unit = await records.get(tin)
    assert unit is not None
    assert (unit.name, unit.password_hash) == ("某某有限公司", None)
    assert await records.set_password_hash(tin, "$argon2id$x")
    assert not await records.set_password_hash(new_tin(), "$argon2id$x")

    assert await records.assign_role(tin, boss, UnitRole.LEGAL_REP, granted_by="cli") is None
    assert await records.assign_role(tin, clerk, UnitRole.TAX_STAFF, granted_by="cli") is None
    assert await records.assign_role(tin, successor, UnitRole.LEGAL_REP, granted_by="cli") == boss
    assert await records.membership(tin, boss) is None
    membership = await records.membership(tin, successor)
    assert membership is not None
    assert (membership.role, membership.password_set) == (UnitRole.LEGAL_REP, True)
    # Changing one's own role replaces it; assigning legal_rep to the holder again displaces nobody.
    assert await records.assign_role(tin, clerk, UnitRole.FINANCE_MANAGER, granted_by="cli") is None
    assert await records.assign_role(tin, successor, UnitRole.LEGAL_REP, granted_by="cli") is None
    assert [m.role for m in await records.memberships(clerk)] == [UnitRole.FINANCE_MANAGER]
    with pytest.raises(UnitNotFound):
        await records.assign_role(new_tin(), clerk, UnitRole.TAX_STAFF, granted_by="cli")
    assert await records.remove_role(tin, clerk)
    assert not await records.remove_role(tin, clerk)


async def test_concurrent_legal_representatives_leave_one(engine: AsyncEngine) -> None:
    records = UnitRecords(engine)
    persons = await people(engine, 6)
    tin = new_tin()
    await records.create(tin=tin, name="并发有限公司", password_hash=None, created_by="cli")
    results = await asyncio.gather(
        *(records.assign_role(tin, p, UnitRole.LEGAL_REP, granted_by="cli") for p in persons), return_exceptions=True
    )
    assert all(r is None or isinstance(r, str) or getattr(r, "code", "") == "role_conflict" for r in results)
    holders = [p for p in persons if (m := await records.membership(tin, p)) and m.role is UnitRole.LEGAL_REP]
    assert len(holders) == 1


async def test_authorizations_and_their_windows(engine: AsyncEngine) -> None:
    records = UnitRecords(engine)
    boss, clerk, newcomer = await people(engine, 3)
    tin, other = new_tin(), new_tin()
    for unit in (tin, other):
        await records.create(tin=unit, name=unit, password_hash=None, created_by="cli")
    await records.assign_role(tin, boss, UnitRole.LEGAL_REP, granted_by="cli")
    await records.assign_role(tin, clerk, UnitRole.TAX_STAFF, granted_by="cli")
    now = datetime.now(UTC)
    later = (now + timedelta(days=3)).astimezone(timezone(timedelta(hours=8)))  # any zone in, UTC stored
    first = await records.grant(tin=tin, grantor_id=boss, grantee_id=clerk, valid_until=later)
    longer = await records.grant(tin=tin, grantor_id=boss, grantee_id=clerk, valid_until=now + timedelta(days=9))
    await records.grant(tin=tin, grantor_id=boss, grantee_id=newcomer, valid_until=now + timedelta(seconds=1))
    membership = await records.membership(tin, newcomer)
    assert membership is not None
    assert membership.role is UnitRole.TAX_STAFF  # authorized without a role: now tax staff

    active = await records.active_authorizations(clerk, now)
    assert list(active) == [tin]
    assert active[tin] == longer.valid_until
    found = await records.active_authorization(tin, clerk, now)
    assert found is not None
    assert found.id == longer.id
    assert await records.active_authorization(other, clerk, now) is None
    # After its end an authorization no longer applies.
    assert await records.active_authorization(tin, newcomer, now + timedelta(seconds=2)) is None
    assert await records.active_authorizations(clerk, now + timedelta(days=10)) == {}

    revoked, role_removed = await records.revoke(tin, longer.id, revoked_by=boss)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert not revoked.active(now)
    assert not role_removed  # the clerk's role was assigned, and another authorization is live
    again, _ = await records.revoke(tin, longer.id, revoked_by=clerk)
    assert again is not None
    assert again.revoked_at == revoked.revoked_at  # revoking again changes nothing
    assert await records.revoke(other, first.id, revoked_by=boss) == (None, False)  # another unit's id
    still = await records.active_authorization(tin, clerk, now)
    assert still is not None
    assert still.id == first.id
    listed = await records.authorizations(tin)
    assert {a.id for a in listed} >= {first.id, longer.id}
    assert [a.created_at for a in listed] == sorted((a.created_at for a in listed), reverse=True)


async def test_revoking_removes_only_the_role_an_authorization_made(engine: AsyncEngine) -> None:
    """Issue 15, item 8: a revoked grantee stayed tax staff (and could lock the declaration password
    for every member). The role a grant made goes with the grantee's last live authorization; a role
    the hall assigned, before or after the grant, stays."""
    records = UnitRecords(engine)
    boss, newcomer, assigned, promoted = await people(engine, 4)
    tin = new_tin()
    await records.create(tin=tin, name="授权有限公司", password_hash=None, created_by="cli")
    await records.assign_role(tin, boss, UnitRole.LEGAL_REP, granted_by="cli")
    await records.assign_role(tin, assigned, UnitRole.TAX_STAFF, granted_by="hall-staff")
    until = datetime.now(UTC) + timedelta(days=3)
    one = await records.grant(tin=tin, grantor_id=boss, grantee_id=newcomer, valid_until=until)
    two = await records.grant(tin=tin, grantor_id=boss, grantee_id=newcomer, valid_until=until)
    for_assigned = await records.grant(tin=tin, grantor_id=boss, grantee_id=assigned, valid_until=until)
    for_promoted = await records.grant(tin=tin, grantor_id=boss, grantee_id=promoted, valid_until=until)
    await records.assign_role(tin, promoted, UnitRole.TAX_STAFF, granted_by="hall-staff")  # the hall's now

    assert (await records.revoke(tin, one.id, revoked_by=boss))[1] is False  # `two` still holds
    assert await records.membership(tin, newcomer) is not None
    assert (await records.revoke(tin, two.id, revoked_by=boss))[1] is True
    assert await records.membership(tin, newcomer) is None
    assert (await records.revoke(tin, two.id, revoked_by=boss))[1] is False  # again: nothing more
    for grant, person in ((for_assigned, assigned), (for_promoted, promoted)):
        assert (await records.revoke(tin, grant.id, revoked_by=boss))[1] is False
        membership = await records.membership(tin, person)
        assert membership is not None
        assert membership.role is UnitRole.TAX_STAFF
