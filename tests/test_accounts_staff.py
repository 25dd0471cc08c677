"""Hall staff: `qrgate admin staff grant`, the `roles` claim, and admin endpoints refusing everyone else."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.accounts.admin import identity_subject
from tests.conftest import new_identity
from tests.support.accounts import access_token, audit_kinds, bearer, identity_fields, new_staff
from tests.support.gateway_server import ThreadedGateway

pytestmark = pytest.mark.anyio
Person = Callable[..., dict[str, str]]
ADMIN_CALLS = [
    ("/v1/admin/registration-codes", {"id_type": "resident_id", "id_number": "11010519491231002X", "name": "王五"}),
    (
        "/v1/admin/password-resets",
        {"id_type": "resident_id", "id_number": "11010519491231002X", "name": "王五", "mode": "reset_ticket"},
    ),
]


def qrgate(gateway: ThreadedGateway, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command, on the test gateway's database."""
    env = {**os.environ, "QRGATE_DATABASE_URL": gateway.settings.database_url}
    command = [sys.executable, "-m", "gateway.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def claims_of(token: str) -> dict[str, Any]:
    """The claims, unverified (the login tests verify signatures; here only the content matters)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


@pytest.mark.slow  # a `qrgate admin` subprocess
async def test_cli_grants_the_role_and_tokens_carry_it(
    gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Person
) -> None:
    person = make_person()
    granted = qrgate(gateway, "admin", "staff", "grant", person["login_name"])
    assert granted.returncode == 0, granted.stderr
    assert person["id"] in granted.stdout
    assert claims_of(await access_token(http, person))["roles"] == ["hall_staff"]
    assert "role_granted" in audit_kinds(gateway.settings.database_url, person["id"])
    assert "roles" not in claims_of(await access_token(http, make_person()))


@pytest.mark.slow  # a `qrgate admin` subprocess
def test_cli_refuses_an_unknown_login_name(gateway: ThreadedGateway) -> None:
    refused = qrgate(gateway, "admin", "staff", "grant", "nobody_here")
    assert refused.returncode == 2
    assert "person_not_found" in refused.stderr


@pytest.mark.parametrize(("path", "body"), ADMIN_CALLS)
async def test_admin_endpoints_refuse_everyone_but_staff(
    gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Person, path: str, body: dict[str, str]
) -> None:
    anonymous = await http.post(path, json=body)
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "unauthorized")
    forged = await http.post(path, json=body, headers=bearer("not.a.token"))
    assert (forged.status_code, forged.json()["code"]) == (401, "invalid_token")
    ordinary = await http.post(path, json=body, headers=bearer(await access_token(http, make_person())))
    assert (ordinary.status_code, ordinary.json()["code"]) == (403, "forbidden_role")
    staff = await new_staff(http, gateway, make_person())
    allowed = await http.post(path, json=body, headers=staff)
    assert allowed.status_code in (201, 404), allowed.text  # 404: no such person to reset


async def test_staff_issue_codes_with_an_audit_trail(
    gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Person
) -> None:
    staff_person = make_person()
    staff = await new_staff(http, gateway, staff_person)
    person = new_identity()
    response = await http.post("/v1/admin/registration-codes", json=identity_fields(person), headers=staff)
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    subject = identity_subject("resident_id", person["id_number"])
    assert audit_kinds(gateway.settings.database_url, subject) == ["registration_code_issued"]
