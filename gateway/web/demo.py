"""`qrgate serve --demo`: a demo person and demo units, so the first command shows the whole journey.

The person's password and the declaration password are new on every start (printed once, never
stored in clear); running it again on the same database resets them. Two units: one that authorized
the demo person (entered straight after login), one that asks for its declaration password. Refused in
production.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway import rules
from gateway.accounts.records import AccountRecords
from gateway.backends import password_hashing
from gateway.directory.db import create_engine, migrate
from gateway.directory.persons import PersonDirectory
from gateway.settings import Settings

PERSON = {
    "login_name": "demo_user",
    "phone": "13800138000",
    "name": "王小明",
    "id_type": "resident_id",
    "id_number": "110105199003070017",
}
# The legal representative who authorized the demo person for the first unit (cannot log in: no one
# knows the password).
GRANTOR = {
    "login_name": "demo_legal_rep",
    "phone": "13800138001",
    "name": "李建国",
    "id_type": "resident_id",
    "id_number": "110105198001010016",
}
AUTHORIZED_UNIT = ("91110108MA01ABCD1E", "演示科技有限公司")
PASSWORD_UNIT = ("91310115MA1K4D2M3A", "演示商贸有限公司")


@dataclass
class DemoAccount:
    login_name: str
    phone: str
    password: str
    units: list[tuple[str, str, str]] = field(default_factory=list)  # (tin, name, how to enter)
    declaration_password: str = ""

    def lines(self, base_url: str) -> list[str]:
        text = [
            "Demo (qrgate serve --demo): not for production.",
            f"  desktop login page  {base_url}/",
            f"  phone simulator     {base_url}/demo/app",
            f"  person              {PERSON['name']}: phone {self.phone}, login name {self.login_name}",
            f"  password            {self.password}",
        ]
        for tin, name, how in self.units:
            text.append(f"  unit                {name} ({tin}): {how}")
        if not self.units:
            text.append("  units               none (the units service is not mounted: QRGATE_UNITS_MOUNT=false)")
        return text


def new_password() -> str:
    """A password the account rules accept: 12 characters, upper, lower, digit and a special one."""
    letters = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(8))
    return f"Qr{letters}-{secrets.randbelow(10)}"


async def ensure_person(settings: Settings, person: dict[str, str], password: str) -> str:
    """The person's id: added, or (on the same database again) given the new password."""
    engine = create_engine(settings.database_url)
    hashing = password_hashing(settings)
    try:
        if settings.database_auto_migrate:
            await migrate(engine)
        directory = PersonDirectory(engine)
        password_hash = await hashing.hash(rules.check_password(password))
        found = await directory.find_by_identifier(person["login_name"])
        if found is not None:
            await AccountRecords(engine).set_password(found.id, password_hash)
            return found.id
        kind = rules.IdType(person["id_type"])
        return await directory.add(
            id_type=kind,
            id_number=rules.normalise_id_number(kind, person["id_number"]),
            name=rules.normalise_name(person["name"]),
            login_name=rules.check_login_name(person["login_name"]),
            phone=rules.check_phone(person["phone"]),
            password_hash=password_hash,
        )
    finally:
        hashing.close()
        await engine.dispose()


async def seed_units(settings: Settings, person_id: str, declaration_password: str) -> list[tuple[str, str, str]]:
    from gateway.units.admin import assign_role, create_unit
    from gateway.units.declaration import reset_declaration_password
    from gateway.units.rules import UnitRole
    from gateway.units.service import UnitsService

    service = UnitsService.create(settings)
    await service.start()
    try:
        grantor = await ensure_person(settings, GRANTOR, new_password())
        for tin, name in (AUTHORIZED_UNIT, PASSWORD_UNIT):
            if await service.records.get(tin) is None:
                await create_unit(service, tin=tin, name=name, declaration_password=None, actor="demo")
            await reset_declaration_password(service, tin, declaration_password, actor="demo", how="demo")
            if (await service.records.membership(tin, person_id)) is None:
                await assign_role(service, tin, person_id, UnitRole.TAX_STAFF, actor="demo")
        tin = AUTHORIZED_UNIT[0]
        if (await service.records.membership(tin, grantor)) is None:
            await assign_role(service, tin, grantor, UnitRole.LEGAL_REP, actor="demo")
        now = datetime.now(UTC)
        if await service.records.active_authorization(tin, person_id, now) is None:
            await service.records.grant(
                tin=tin, grantor_id=grantor, grantee_id=person_id, valid_until=now + timedelta(days=365)
            )
    finally:
        await service.close()
    return [
        (AUTHORIZED_UNIT[0], AUTHORIZED_UNIT[1], "authorized: entered without a declaration password"),
        (PASSWORD_UNIT[0], PASSWORD_UNIT[1], f"declaration password {declaration_password}"),
    ]


async def seed(settings: Settings) -> DemoAccount:
    if settings.production:
        raise ValueError("--demo seeds a person with a printed password: refused with QRGATE_PRODUCTION=true")
    account = DemoAccount(login_name=PERSON["login_name"], phone=PERSON["phone"], password=new_password())
    person_id = await ensure_person(settings, PERSON, account.password)
    if settings.units_mount:
        account.declaration_password = f"Decl{secrets.randbelow(10**6):06d}"
        account.units = await seed_units(settings, person_id, account.declaration_password)
    return account


def prepare(settings: Settings, host: str, port: int) -> Settings:
    """Seed the demo and print how to use it; the settings to serve it with (public URL on this port,
    unless QRGATE_PUBLIC_URL says otherwise)."""
    import asyncio
    import os

    if "QRGATE_PUBLIC_URL" not in os.environ:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 (compared, not bound)
        settings = settings.model_copy(update={"public_url": f"http://{shown}:{port}"})
    account = asyncio.run(seed(settings))
    print("\n".join(account.lines(settings.issuer)), flush=True)
    return settings
