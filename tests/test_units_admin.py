"""Hall staff and the unit's own officers: creating units and assigning roles (HTTP and
`qrgate admin unit ...`), and resetting the declaration password (legal representative and finance
manager with a recent login, hall staff at the counter; never tax staff), each unlocking and audited."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway import cli
from tests.support.accounts import audit_kinds
from tests.support.units import (
    DECLARATION_PASSWORD,
    Person,
    UnitsStack,
    captcha,
    claims_of,
    new_person,
    new_tin,
    new_unit,
)

pytestmark = pytest.mark.anyio
NEW_PASSWORD = "Fresh-4321"


@pytest.fixture
async def http(units_stack: UnitsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=units_stack.units_url, timeout=20) as client:
        yield client


@pytest.fixture
async def staff(units_stack: UnitsStack, http: httpx.AsyncClient) -> Person:
    return await new_person(units_stack, http, staff=True)


async def lock(person: Person, tin: str) -> None:
    """Five wrong declaration passwords (with captchas after the first)."""
    for attempt in range(5):
        extra = await captcha(person.http) if attempt else {}
        answer = await person.post(f"/v1/units/{tin}/verify", {"declaration_password": "Wrong-000", **extra})
        assert answer.status_code == (423 if attempt == 4 else 401), answer.text


async def verify(person: Person, tin: str, password: str) -> httpx.Response:
    return await person.post(
        f"/v1/units/{tin}/verify", {"declaration_password": password, **await captcha(person.http)}
    )


def unit_audit(stack: UnitsStack, tin: str) -> list[str]:
    return audit_kinds(stack.settings.database_url, f"unit:{tin}")


@pytest.mark.parametrize("role", ["legal_rep", "finance_manager"])
async def test_reset_by_the_units_officers_unlocks(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person, role: str
) -> None:
    officer, clerk = await new_person(units_stack, http), await new_person(units_stack, http)
    tin = await new_unit(staff, (role, officer), ("tax_staff", clerk))
    await lock(clerk, tin)
    reset = await officer.put(f"/v1/units/{tin}/declaration-password", {"new_password": NEW_PASSWORD})
    assert reset.status_code == 204, reset.text
    assert (await verify(clerk, tin, DECLARATION_PASSWORD)).status_code == 401  # the old one is gone
    ok = await clerk.post(f"/v1/units/{tin}/verify", {"declaration_password": NEW_PASSWORD, **await captcha(http)})
    assert ok.status_code == 200, ok.text
    kinds = await asyncio.to_thread(unit_audit, units_stack, tin)
    order = [kinds.index(kind) for kind in ("declaration_password_locked", "declaration_password_reset")]
    assert order == sorted(order)
    assert kinds.index("declaration_password_reset") < kinds.index("declaration_password_unlocked")


async def test_tax_staff_may_not_reset(units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person) -> None:
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff, ("tax_staff", clerk))
    refused = await clerk.put(f"/v1/units/{tin}/declaration-password", {"new_password": NEW_PASSWORD})
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden_unit_role"
    outsider = await new_person(units_stack, http)
    assert (await outsider.put(f"/v1/units/{tin}/declaration-password", {"new_password": NEW_PASSWORD})).json()[
        "code"
    ] == "not_unit_member"
    assert (await verify(clerk, tin, DECLARATION_PASSWORD)).status_code == 200


async def test_reset_needs_a_recent_login(units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person) -> None:
    boss = await new_person(units_stack, http)
    tin = await new_unit(staff, ("legal_rep", boss))
    claims = claims_of(boss.access_token)
    stale = units_stack.gateway_issuer().access_token(
        subject=claims["sub"],
        client_id=claims["client_id"],
        session_id=claims["sid"],
        amr=claims["amr"],
        auth_time=int(time.time()) - 3600,  # logged in an hour ago, token refreshed since
        extra={"scope": claims["scope"]},
    )
    old_login = Person(boss.identity, stale, http)
    answer = await old_login.put(f"/v1/units/{tin}/declaration-password", {"new_password": NEW_PASSWORD})
    assert answer.status_code == 401
    assert answer.json()["code"] == "insufficient_user_authentication"
    assert "Log in again" in answer.json()["detail"]
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_user_authentication"')
    assert "max_age=600" in challenge
    assert (await boss.put(f"/v1/units/{tin}/declaration-password", {"new_password": NEW_PASSWORD})).status_code == 204


@pytest.mark.parametrize("password", ["short", "with space1", "密码密码密码", "x" * 21, "tab\there1"])
async def test_reset_refuses_bad_passwords(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person, password: str
) -> None:
    boss = await new_person(units_stack, http)
    tin = await new_unit(staff, ("legal_rep", boss))
    answer = await boss.put(f"/v1/units/{tin}/declaration-password", {"new_password": password})
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_declaration_password"


async def test_hall_reset_by_staff(units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person) -> None:
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff, ("tax_staff", clerk))
    await lock(clerk, tin)
    refused = await clerk.put(f"/v1/admin/units/{tin}/declaration-password", {"new_password": NEW_PASSWORD})
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden_role"
    reset = await staff.put(f"/v1/admin/units/{tin}/declaration-password", {"new_password": NEW_PASSWORD})
    assert reset.status_code == 204
    assert (await verify(clerk, tin, NEW_PASSWORD)).status_code == 200
    kinds = await asyncio.to_thread(unit_audit, units_stack, tin)
    assert {"declaration_password_reset", "declaration_password_unlocked"} <= set(kinds)
    missing = await staff.put(f"/v1/admin/units/{new_tin()}/declaration-password", {"new_password": NEW_PASSWORD})
    assert missing.status_code == 404
    assert missing.json()["code"] == "unit_not_found"


async def test_hall_staff_create_units_and_assign_roles(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    tin = new_tin()
    created = await staff.post("/v1/admin/units", {"tin": tin.lower(), "name": " 某某科技有限公司 "})
    assert created.status_code == 201, created.text
    assert created.json() == {"tin": tin, "name": "某某科技有限公司", "declaration_password_set": False}
    again = await staff.post("/v1/admin/units", {"tin": tin, "name": "别的名字"})
    assert again.status_code == 409
    assert again.json()["code"] == "unit_exists"
    for body, code in [
        ({"tin": "91110000600037341X", "name": "x"}, "invalid_tin"),
        ({"tin": new_tin(), "name": "x", "declaration_password": "123"}, "invalid_declaration_password"),
        ({"tin": new_tin(), "name": "\u0007bell"}, "invalid_unit_name"),
        ({"tin": new_tin()}, "invalid_request"),
    ]:
        answer = await staff.post("/v1/admin/units", body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == code

    first, second = await new_person(units_stack, http), await new_person(units_stack, http)
    assigned = await staff.put(
        f"/v1/admin/units/{tin}/roles", {"identifier": first.identity["id_number"], "role": "legal_rep"}
    )
    assert assigned.json() == {"tin": tin, "person_id": first.id, "role": "legal_rep", "replaced": None}
    # One legal representative per unit: naming another one replaces the first.
    replaced = await staff.put(
        f"/v1/admin/units/{tin}/roles", {"identifier": second.identity["phone"], "role": "legal_rep"}
    )
    assert replaced.json()["replaced"] == first.id
    assert (await first.get("/v1/units")).json()["units"] == []
    assert (await second.get("/v1/units")).json()["units"][0]["role"] == "legal_rep"
    for body, status, code in [
        ({"identifier": "no_such_person", "role": "tax_staff"}, 404, "person_not_found"),
        ({"identifier": first.identity["phone"], "role": "owner"}, 400, "invalid_request"),
    ]:
        answer = await staff.put(f"/v1/admin/units/{tin}/roles", body)
        assert (answer.status_code, answer.json()["code"]) == (status, code)
    unknown_unit = await staff.put(
        f"/v1/admin/units/{new_tin()}/roles", {"identifier": first.identity["phone"], "role": "tax_staff"}
    )
    assert unknown_unit.status_code == 404
    assert unknown_unit.json()["code"] == "unit_not_found"
    assert (await staff.delete(f"/v1/admin/units/{tin}/roles/{second.id}")).status_code == 204
    assert (await staff.delete(f"/v1/admin/units/{tin}/roles/{second.id}")).json()["code"] == "role_not_found"
    # Only hall staff: a unit's own legal representative may not use the hall's endpoints.
    refused = await second.post("/v1/admin/units", {"tin": new_tin(), "name": "x"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden_role"
    kinds = await asyncio.to_thread(unit_audit, units_stack, tin)
    assert kinds[0] == "unit_created"
    assert kinds.count("unit_role_assigned") == 2
    assert kinds.count("unit_role_removed") == 2


async def test_admin_unit_cli(
    units_stack: UnitsStack,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`qrgate admin unit create | set-password | assign-role`, then the person uses the unit. The first
    runs as a real subprocess; the others call the same entry point in-process (faster), with the same
    QRGATE_* settings as the servers."""
    person = await new_person(units_stack, http)
    tin = new_tin()
    created = await asyncio.to_thread(
        units_stack.qrgate, "admin", "unit", "create", "--tin", tin, "--name", "命令行有限公司"
    )
    assert created.returncode == 0, created.stderr
    assert tin in created.stdout
    for name, value in units_stack.gateway.env.items():
        if name.startswith("QRGATE_"):
            monkeypatch.setenv(name, value)

    async def qrgate(*args: str, stdin: str = "") -> tuple[int, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        status = await asyncio.to_thread(cli.main, ["admin", "unit", *args])
        captured = capsys.readouterr()
        return status, captured.out + captured.err

    status, output = await qrgate("set-password", tin, "--password-stdin", stdin=f"{NEW_PASSWORD}\n")
    assert status == 0, output
    assert NEW_PASSWORD not in output
    status, output = await qrgate("assign-role", tin, person.identity["login_name"], "finance_manager")
    assert status == 0, output
    assert (await person.get("/v1/units")).json()["units"][0] == {
        "tin": tin,
        "name": "命令行有限公司",
        "role": "finance_manager",
        "authorized": False,
        "authorized_until": None,
        "declaration_password_set": True,
        "locked": False,
        "locked_until": None,
        "captcha_required": False,
    }
    assert (await person.post(f"/v1/units/{tin}/verify", {"declaration_password": NEW_PASSWORD})).status_code == 200
    for args, stdin, code in [
        (("create", "--tin", tin, "--name", "again"), "", "unit_exists"),
        (("create", "--tin", "bad", "--name", "x"), "", "invalid_tin"),
        (("assign-role", tin, "nobody_here", "tax_staff"), "", "person_not_found"),
        (("set-password", tin, "--password-stdin"), "123\n", "invalid_declaration_password"),
        (("set-password", new_tin(), "--password-stdin"), f"{NEW_PASSWORD}\n", "unit_not_found"),
    ]:
        status, output = await qrgate(*args, stdin=stdin)
        assert status == 2
        assert code in output
