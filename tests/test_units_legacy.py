"""The cut-over policy: legacy logins without a person (CA login, declaration-password-only login)
work before the configured date and answer 410, saying what to do instead, from that date on.

The separate units process keeps the default cut-over (2020-01-01, long past); the service mounted in
the gateway process is configured with a cut-over in the future."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import httpx
import pytest

from gateway.units.rules import legacy_allowed, legacy_retired_message
from tests.support.accounts import fresh_ip
from tests.support.units import (
    DECLARATION_PASSWORD,
    Person,
    UnitsStack,
    captcha,
    claims_of,
    issue_unit_certificate,
    new_person,
    new_tin,
    new_unit,
)

LEGACY = ("/v1/legacy/password-login", "/v1/legacy/ca-challenge", "/v1/legacy/ca-login")


def test_the_cutover_starts_at_midnight_china_standard_time() -> None:
    cutover = date(2020, 1, 1)
    assert legacy_allowed(cutover, datetime(2019, 12, 31, 15, 59, 59, tzinfo=UTC))
    assert not legacy_allowed(cutover, datetime(2019, 12, 31, 16, 0, 0, tzinfo=UTC))
    assert not legacy_allowed(cutover)  # the default date is past
    assert legacy_allowed(date(2999, 1, 1))


def test_the_message_says_what_to_do_in_both_languages() -> None:
    message = legacy_retired_message(date(2020, 1, 1))
    for words in ("2020年1月1日", "个人所得税APP", "实名注册", "2020-01-01", "real name", "mobile app", "WEB"):
        assert words in message


@pytest.fixture
async def separate(units_stack: UnitsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=units_stack.units_url, timeout=20) as client:
        yield client


@pytest.fixture
async def mounted(units_stack: UnitsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=units_stack.mounted_url, timeout=20) as client:
        yield client


@pytest.mark.anyio
@pytest.mark.parametrize("path", LEGACY)
async def test_after_the_cutover_every_legacy_login_is_gone(separate: httpx.AsyncClient, path: str) -> None:
    for body in ({}, {"tin": new_tin(), "declaration_password": DECLARATION_PASSWORD}, None):
        answer = await separate.post(path, json=body)
        assert answer.status_code == 410
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["code"] == "legacy_login_retired"
        assert "实名注册" in problem["detail"]
        assert "register with your real name" in problem["detail"].lower()


@pytest.mark.anyio
async def test_before_the_cutover_the_declaration_password_alone_lets_a_unit_in(
    units_stack: UnitsStack, mounted: httpx.AsyncClient
) -> None:
    staff = await new_person(units_stack, mounted, staff=True)
    tin = await new_unit(staff)
    ip = fresh_ip()
    login = {"tin": tin, "declaration_password": DECLARATION_PASSWORD}
    answer = await mounted.post("/v1/legacy/password-login", json=login, headers=ip)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["unit"] == {"tin": tin, "role": "unit", "via": "declaration_password"}
    claims = claims_of(body["unit_token"])
    assert claims["sub"] == f"unit:{tin}"
    assert claims["legacy"] is True
    assert claims["iss"] == units_stack.mounted_url
    # The same counters as the real-name verification: a wrong one is counted and needs a captcha next.
    wrong = await mounted.post(
        "/v1/legacy/password-login", json={**login, "declaration_password": "Wrong-000"}, headers=ip
    )
    assert wrong.status_code == 401
    assert wrong.json()["attempts_left"] == 4
    assert (await mounted.post("/v1/legacy/password-login", json=login, headers=ip)).json()[
        "code"
    ] == "captcha_required"
    again = await mounted.post("/v1/legacy/password-login", json={**login, **await captcha(mounted, ip)}, headers=ip)
    assert again.status_code == 200
    # An unknown unit is answered like a wrong password.
    unknown = await mounted.post("/v1/legacy/password-login", json={**login, "tin": new_tin()}, headers=ip)
    assert unknown.status_code == 401
    assert unknown.json()["code"] == "invalid_credentials"
    # A legacy token has no session behind it: it cannot be renewed.
    person = Person(staff.identity, staff.access_token, mounted)
    refused = await person.post("/v1/unit-token/renew", {"unit_token": body["unit_token"]})
    assert refused.status_code == 403
    assert refused.json()["code"] == "unit_token_not_renewable"


@pytest.mark.anyio
async def test_before_the_cutover_a_ca_certificate_alone_lets_a_unit_in(
    units_stack: UnitsStack, mounted: httpx.AsyncClient
) -> None:
    staff = await new_person(units_stack, mounted, staff=True)
    tin = await new_unit(staff)
    certificate = issue_unit_certificate(units_stack.pki.root, tin)
    challenge = await mounted.post("/v1/legacy/ca-challenge", json={"tin": tin})
    assert challenge.status_code == 201, challenge.text
    proof = {
        "challenge_id": challenge.json()["challenge_id"],
        "certificates": certificate.chain,
        "signature": certificate.sign(challenge.json()["challenge"]),
    }
    answer = await mounted.post("/v1/legacy/ca-login", json=proof)
    assert answer.status_code == 200, answer.text
    assert answer.json()["unit"] == {"tin": tin, "role": "unit", "via": "ca"}
    assert claims_of(answer.json()["unit_token"])["sub"] == f"unit:{tin}"
    replay = await mounted.post("/v1/legacy/ca-login", json=proof)
    assert replay.json()["code"] == "challenge_invalid"
    # A person's challenge does not serve a legacy login, nor the other way round.
    member = await new_person(units_stack, mounted)
    await staff.put(f"/v1/admin/units/{tin}/roles", {"identifier": member.identity["phone"], "role": "tax_staff"})
    personal = (await member.post(f"/v1/units/{tin}/ca/challenge")).json()
    crossed = {**proof, "challenge_id": personal["challenge_id"], "signature": certificate.sign(personal["challenge"])}
    assert (await mounted.post("/v1/legacy/ca-login", json=crossed)).json()["code"] == "challenge_invalid"
