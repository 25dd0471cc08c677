"""Scopes at the units service (docs/units.md, "Scopes"): issue 15's reproduction, a token exchanged
with `scope=units.read` reset a declaration password, granted an authorization and verified a unit.
Now each route needs its scope (units.read, units.verify, units.manage), and a token without it gets
403 `insufficient_scope` with the RFC 6750 challenge. Real servers: the gateway process and the
separate units process of `units_stack`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from qrgate_verify import InsufficientScope, check_scope
from qrgate_verify.claims import AccessTokenClaims
from tests.support.units import (
    DECLARATION_PASSWORD,
    Person,
    UnitsStack,
    claims_of,
    gateway_login,
    new_person,
    new_unit,
)

pytestmark = pytest.mark.anyio
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
EVERY_UNITS_SCOPE = {"units.read", "units.verify", "units.manage"}


@pytest.fixture
async def http(units_stack: UnitsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=units_stack.units_url, timeout=20) as client:
        yield client


@pytest.fixture
async def staff(units_stack: UnitsStack, http: httpx.AsyncClient) -> Person:
    return await new_person(units_stack, http, staff=True)


async def exchange(stack: UnitsStack, token: str, scope: str | None) -> httpx.Response:
    form = {
        "grant_type": EXCHANGE,
        "subject_token": token,
        "subject_token_type": ACCESS,
        "audience": "units",
        "client_id": "web",
    }
    if scope is not None:
        form["scope"] = scope
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=20) as gateway:
        return await gateway.post("/v1/token", data=form)


def assert_insufficient(answer: httpx.Response, scope: str) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == "insufficient_scope"
    assert body["scope"] == scope
    assert answer.headers["www-authenticate"] == f'Bearer error="insufficient_scope", scope="{scope}"'


def grant_body(grantee: Person) -> dict[str, str]:
    return {
        "grantee_identifier": grantee.identity["phone"],
        "grantee_name": grantee.identity["name"],
        "valid_until": (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0).isoformat(),
    }


async def test_login_tokens_carry_their_clients_scopes(units_stack: UnitsStack, http: httpx.AsyncClient) -> None:
    person = await new_person(units_stack, http)
    for client in ("web", "withholding-desktop", "mobile-app"):
        token = await gateway_login(units_stack, person.identity, client_id=client)
        assert set(claims_of(token)["scope"].split()) >= EVERY_UNITS_SCOPE


async def test_a_read_only_token_cannot_reset_grant_or_verify(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    """Issue 15, reproduction 2, as it was done: the attack now fails at every step."""
    boss, clerk = await new_person(units_stack, http), await new_person(units_stack, http)
    tin = await new_unit(staff, ("legal_rep", boss), ("tax_staff", clerk))
    exchanged = await exchange(units_stack, boss.access_token, "units.read")
    assert exchanged.status_code == 200, exchanged.text
    assert exchanged.json()["scope"] == "units.read"
    reader = Person(boss.identity, exchanged.json()["access_token"], http)
    assert claims_of(reader.access_token)["scope"] == "units.read"

    listed = await reader.get("/v1/units")
    assert listed.status_code == 200
    assert [unit["tin"] for unit in listed.json()["units"]] == [tin]

    reset = await reader.put(f"/v1/units/{tin}/declaration-password", {"new_password": "Other-0002"})
    assert_insufficient(reset, "units.manage")
    granted = await reader.post(f"/v1/units/{tin}/authorizations", grant_body(clerk))
    assert_insufficient(granted, "units.manage")
    assert_insufficient(await reader.get(f"/v1/units/{tin}/authorizations"), "units.manage")
    verified = await reader.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
    assert_insufficient(verified, "units.verify")
    assert_insufficient(await reader.post(f"/v1/units/{tin}/enter"), "units.verify")
    assert_insufficient(await reader.post("/v1/unit-token/renew", {"unit_token": "x"}), "units.verify")
    assert_insufficient(await reader.post(f"/v1/units/{tin}/ca/challenge"), "units.verify")
    linked = await reader.post("/v1/units/link", {"tin": tin, "declaration_password": DECLARATION_PASSWORD})
    assert_insufficient(linked, "units.verify")
    assert_insufficient(await reader.post("/v1/admin/units", {"tin": tin, "name": "x"}), "units.manage")

    # Nothing changed: the old declaration password still verifies, and no authorization was made.
    assert (
        await clerk.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
    ).status_code == 200
    assert (await boss.get(f"/v1/units/{tin}/authorizations")).json() == {"authorizations": []}


async def test_exchange_narrows_and_never_widens(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    boss = await new_person(units_stack, http)
    tin = await new_unit(staff, ("legal_rep", boss))
    # By default the units audience gives what it allows and the subject holds: read and verify.
    default = await exchange(units_stack, boss.access_token, None)
    assert default.status_code == 200, default.text
    assert set(default.json()["scope"].split()) == {"units.read", "units.verify"}
    verifier = Person(boss.identity, default.json()["access_token"], http)
    verified = await verifier.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
    assert verified.status_code == 200, verified.text
    assert_insufficient(
        await verifier.put(f"/v1/units/{tin}/declaration-password", {"new_password": "Other-0002"}), "units.manage"
    )
    # units.manage is not the units audience's to give, and a narrowed token cannot be widened again.
    manage = await exchange(units_stack, boss.access_token, "units.manage")
    assert manage.status_code == 400
    assert manage.json()["error"] == "invalid_scope"
    reader = (await exchange(units_stack, boss.access_token, "units.read")).json()["access_token"]
    widened = await exchange(units_stack, reader, "units.verify")
    assert widened.status_code == 400, widened.text  # an exchanged token (aud units) is no subject token here
    assert widened.json()["error"] == "invalid_grant"
    # The person's own login token (every units scope of its client) may do the officer's work.
    reset = await boss.put(f"/v1/units/{tin}/declaration-password", {"new_password": "Other-0002"})
    assert reset.status_code == 204, reset.text


async def test_a_token_without_units_scopes_gets_nothing(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    """A relying party's token (scope `openid ...`) or one with no scope claim at all is refused."""
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff, ("tax_staff", clerk))
    claims = claims_of(clerk.access_token)
    issuer = units_stack.gateway_issuer()
    common = {
        "subject": claims["sub"],
        "client_id": claims["client_id"],
        "session_id": claims["sid"],
        "amr": claims["amr"],
        "auth_time": claims["auth_time"],
    }
    for extra in ({"scope": "openid profile"}, None):
        token = issuer.access_token(**common, extra=extra)
        other = Person(clerk.identity, token, http)
        assert_insufficient(await other.get("/v1/units"), "units.read")
        verified = await other.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
        assert_insufficient(verified, "units.verify")


def test_a_key_bound_token_is_challenged_with_the_dpop_scheme() -> None:
    now = int(time.time())
    claims: AccessTokenClaims = {
        "iss": "https://login.example",
        "sub": "p_1",
        "aud": "units",
        "exp": now + 60,
        "iat": now,
        "jti": "j" * 16,
        "client_id": "web",
        "sid": "s" * 22,
        "amr": ["pwd"],
        "auth_time": now,
        "cnf": {"jkt": "k" * 43},
        "scope": "units.read",
    }
    check_scope(claims, "units.read")
    with pytest.raises(InsufficientScope) as refused:
        check_scope(claims, "units.read", "units.verify")
    assert refused.value.status == 403
    assert refused.value.response_headers()["WWW-Authenticate"] == (
        'DPoP error="insufficient_scope", scope="units.read units.verify"'
    )
    assert "units.verify" in refused.value.detail
