"""How the units service trusts the gateway, and how others trust the units service.

The units service runs as a separate `qrgate serve-units` process and trusts the `qrgate serve`
gateway process only through its JWKS over HTTP: tokens of another issuer, expired ones and ones for
another audience are refused, and a gateway key rotation does not disturb it. Unit tokens verify
against the units JWKS, renew while the gateway session lives, and the same service works mounted
inside `qrgate serve`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from gateway.settings import Settings
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.keys import KeyFile
from gateway.tokens.verifier import AccessTokenVerifier, InvalidToken, RemoteJwks
from gateway.units.app import create_standalone_app
from tests.support.databases import POSTGRES, create_postgres_database, drop_postgres_database
from tests.support.dpop import DpopKey
from tests.support.gateway_server import FAST_HASHING, AppServer, free_port
from tests.support.units import (
    DECLARATION_PASSWORD,
    Person,
    UnitsStack,
    bearer,
    claims_of,
    gateway_login,
    header_of,
    new_person,
    new_unit,
)

pytestmark = pytest.mark.anyio
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture
async def http(units_stack: UnitsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=units_stack.units_url, timeout=20) as client:
        yield client


@pytest.fixture
async def staff(units_stack: UnitsStack, http: httpx.AsyncClient) -> Person:
    return await new_person(units_stack, http, staff=True)


def forged(stack: UnitsStack, person: Person, **changes: object) -> str:
    """A token signed with the gateway's real key, with claims of our choosing."""
    claims = claims_of(person.access_token)
    arguments: dict[str, object] = {
        "subject": claims["sub"],
        "client_id": claims["client_id"],
        "session_id": claims["sid"],
        "amr": claims["amr"],
        "auth_time": claims["auth_time"],
        "extra": {"scope": claims["scope"]},
        **changes,
    }
    return stack.gateway_issuer().access_token(**arguments)  # type: ignore[arg-type]


async def kids(jwks_url: str) -> set[str]:
    async with httpx.AsyncClient(timeout=10) as client:
        keys = (await client.get(jwks_url)).json()["keys"]
    assert all("d" not in key for key in keys)  # public keys only
    return {str(key["kid"]) for key in keys}


async def units_answer(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/v1/units", headers=bearer(token))


async def test_a_separate_process_trusts_the_gateway_over_http(
    units_stack: UnitsStack, http: httpx.AsyncClient
) -> None:
    person = await new_person(units_stack, http)
    assert (await units_answer(http, person.access_token)).status_code == 200
    # The separate service never saw the gateway's key file: it has keys of its own.
    gateway_kids = await kids(units_stack.gateway_url + "/.well-known/jwks.json")
    assert gateway_kids.isdisjoint(await kids(units_stack.units_url + "/.well-known/jwks.json"))
    async with httpx.AsyncClient(base_url=units_stack.units.base_url, timeout=10) as service:
        ready = await service.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "database": "ok", "keys": "ok"}}


async def test_missing_and_malformed_tokens(http: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic eDp5"}, bearer("x"), bearer("a.b.c"), bearer("e" * 9000)):
        answer = await http.get("/v1/units", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["code"] == "invalid_token"


async def test_tokens_of_another_issuer_are_refused(
    units_stack: UnitsStack, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    person = await new_person(units_stack, http)
    stranger_settings = Settings(public_url="https://login.example", keys_file=str(tmp_path / "k.json"))
    stranger = TokenIssuer(stranger_settings, KeyFile(tmp_path / "k.json", "ES256"))
    claims = claims_of(person.access_token)
    foreign = stranger.access_token(
        subject=claims["sub"], client_id="web", session_id=claims["sid"], amr=["pwd"], auth_time=claims["auth_time"]
    )
    answer = await units_answer(http, foreign)
    assert answer.status_code == 401
    assert "unknown key" in answer.json()["detail"]
    # The gateway's own key, but another issuer's name: refused too.
    impostor = TokenIssuer(
        Settings(public_url="https://login.example", keys_file=units_stack.settings.keys_file),
        KeyFile(units_stack.settings.keys_file, "ES256"),
    )
    named_wrong = impostor.access_token(
        subject=claims["sub"], client_id="web", session_id=claims["sid"], amr=["pwd"], auth_time=claims["auth_time"]
    )
    assert (await units_answer(http, named_wrong)).status_code == 401


async def test_expired_tokens_are_refused(units_stack: UnitsStack, http: httpx.AsyncClient) -> None:
    person = await new_person(units_stack, http)
    expired = forged(units_stack, person, now=time.time() - 3600)
    answer = await units_answer(http, expired)
    assert answer.status_code == 401
    assert answer.json()["code"] == "invalid_token"
    assert (await units_answer(http, forged(units_stack, person))).status_code == 200


async def test_tokens_for_another_audience_are_refused(units_stack: UnitsStack, http: httpx.AsyncClient) -> None:
    person = await new_person(units_stack, http)
    async with httpx.AsyncClient(base_url=units_stack.gateway_url, timeout=20) as gateway:

        async def exchanged(audience: str) -> str:
            form = {
                "grant_type": EXCHANGE,
                "subject_token": person.access_token,
                "subject_token_type": ACCESS,
                "audience": audience,
                "client_id": "web",
            }
            response = await gateway.post("/v1/token", data=form)
            assert response.status_code == 200, response.text
            token: str = response.json()["access_token"]
            return token

        payroll = await exchanged("payroll")
        units = await exchanged("units")
    refused = await units_answer(http, payroll)
    assert refused.status_code == 401
    assert "audience" in refused.json()["detail"]
    assert (await units_answer(http, units)).status_code == 200  # exchanged for the units audience
    assert (await units_answer(http, forged(units_stack, person, audience="payroll"))).status_code == 401


async def test_gateway_key_rotation_does_not_break_it(units_stack: UnitsStack, http: httpx.AsyncClient) -> None:
    person = await new_person(units_stack, http)
    old_token = person.access_token
    assert (await units_answer(http, old_token)).status_code == 200
    old_kid = header_of(old_token)["kid"]
    rotated = await asyncio.to_thread(units_stack.qrgate, "keys", "rotate", "--activation-delay", "0")
    assert rotated.returncode == 0, rotated.stderr
    deadline = time.monotonic() + 10
    while True:  # the gateway re-reads its key file within a second
        new_token = await gateway_login(units_stack, person.identity)
        if header_of(new_token)["kid"] != old_kid:
            break
        assert time.monotonic() < deadline, "the gateway never signed with the new key"
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.6)  # the test stack refetches an unknown kid at most every 0.5 s
    assert (await units_answer(http, new_token)).status_code == 200
    assert (await units_answer(http, old_token)).status_code == 200  # the old key is still published


async def test_unit_tokens_verify_against_the_units_jwks(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff, ("tax_staff", clerk))
    answer = await clerk.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
    token = answer.json()["unit_token"]
    assert header_of(token)["typ"] == "unit+jwt"
    jwks = RemoteJwks(units_stack.units_url + "/.well-known/jwks.json")
    try:
        verifier = AccessTokenVerifier(jwks, issuer=units_stack.units_url, audience="qrgate-units", typ="unit+jwt")
        claims = await verifier.verify(token)
        assert claims["sub"] == clerk.id
        # The gateway's verifier (at+jwt, the gateway's issuer) does not take a unit token for an access token.
        gateway_jwks = RemoteJwks(units_stack.gateway_url + "/.well-known/jwks.json")
        try:
            with pytest.raises(InvalidToken):
                await AccessTokenVerifier(gateway_jwks, issuer=units_stack.gateway_url, audience="qrgate-sso").verify(
                    token
                )
        finally:
            await gateway_jwks.aclose()
    finally:
        await jwks.aclose()
    # Nor does the units service take a unit token where a gateway access token belongs.
    assert (await units_answer(http, token)).status_code == 401


async def test_renewal_while_the_session_lives(units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person) -> None:
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff, ("tax_staff", clerk))
    first = (await clerk.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})).json()
    renewed = await clerk.post("/v1/unit-token/renew", {"unit_token": first["unit_token"]})
    assert renewed.status_code == 200, renewed.text
    body = renewed.json()
    assert body["unit"] == first["unit"]
    assert claims_of(body["unit_token"])["jti"] != claims_of(first["unit_token"])["jti"]
    assert claims_of(body["unit_token"])["sid"] == claims_of(clerk.access_token)["sid"]
    # Another login session (its own sid) cannot renew this session's unit token.
    other_session = Person(clerk.identity, await gateway_login(units_stack, clerk.identity), http)
    mismatch = await other_session.post("/v1/unit-token/renew", {"unit_token": first["unit_token"]})
    assert mismatch.status_code == 403
    assert mismatch.json()["code"] == "session_mismatch"
    # Nor can another person, nor anyone without a live gateway token.
    stranger = await new_person(units_stack, http)
    assert (await stranger.post("/v1/unit-token/renew", {"unit_token": first["unit_token"]})).status_code == 403
    anonymous = await http.post("/v1/unit-token/renew", json={"unit_token": first["unit_token"]})
    assert anonymous.status_code == 401
    expired = forged(units_stack, clerk, now=time.time() - 3600)
    assert (await http.post("/v1/unit-token/renew", json={"unit_token": first["unit_token"]},
                            headers=bearer(expired))).status_code == 401  # fmt: skip
    for junk in ("x", first["unit_token"] + "x", clerk.access_token):
        refused = await clerk.post("/v1/unit-token/renew", {"unit_token": junk})
        assert refused.status_code == 400
        assert refused.json()["code"] == "invalid_unit_token"
    # A role taken away ends renewals.
    removed = await staff.delete(f"/v1/admin/units/{tin}/roles/{clerk.id}")
    assert removed.status_code == 204
    gone = await clerk.post("/v1/unit-token/renew", {"unit_token": body["unit_token"]})
    assert gone.status_code == 403
    assert gone.json()["code"] == "not_unit_member"


async def test_mounted_inside_qrgate_serve(units_stack: UnitsStack, staff: Person) -> None:
    """The embedded default: the service at /units of the gateway process, trusting it over HTTP too."""
    async with httpx.AsyncClient(base_url=units_stack.mounted_url, timeout=20) as mounted:
        mounted_staff = Person(staff.identity, staff.access_token, mounted)
        clerk = await new_person(units_stack, mounted)
        tin = await new_unit(mounted_staff, ("tax_staff", clerk))
        listed = await clerk.get("/v1/units")
        assert [unit["tin"] for unit in listed.json()["units"]] == [tin]
        answer = await clerk.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
        assert answer.status_code == 200, answer.text
        token = answer.json()["unit_token"]
    mounted_kids = await kids(units_stack.mounted_url + "/.well-known/jwks.json")
    assert claims_of(token)["iss"] == units_stack.mounted_url
    assert header_of(token)["kid"] in mounted_kids
    assert mounted_kids.isdisjoint(await kids(units_stack.gateway_url + "/.well-known/jwks.json"))
    # The two services share the database: the separate one lists the same unit.
    async with httpx.AsyncClient(base_url=units_stack.units_url, timeout=20) as separate:
        assert (await separate.get("/v1/units", headers=clerk.headers)).json()["units"][0]["tin"] == tin


async def test_an_unreachable_gateway_is_a_503(
    tmp_path: Path, units_stack: UnitsStack, http: httpx.AsyncClient
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = Settings(
        public_url="http://127.0.0.1:1",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'units.db'}",
        keys_file=str(tmp_path / "keys.json"),
        units_gateway_url=dead,
        **FAST_HASHING,
    )
    person = await new_person(units_stack, http)
    with AppServer(create_standalone_app(settings)) as base_url:
        async with httpx.AsyncClient(base_url=base_url + "/units", timeout=20) as http:
            answer = await http.get("/v1/units", headers=person.headers)
    assert answer.status_code == 503
    assert answer.json()["code"] == "gateway_unavailable"
    assert "retry-after" in answer.headers


@pytest.mark.parametrize("where", ["separate", "mounted"])
async def test_dpop_bound_tokens_need_proofs_and_bind_the_unit_token(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person, where: str
) -> None:
    base = units_stack.units_url if where == "separate" else units_stack.mounted_url
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff, ("tax_staff", clerk))
    key = DpopKey()
    bound = forged(units_stack, clerk, jkt=key.jkt)
    url = f"{base}/v1/units/{tin}/verify"
    body = {"declaration_password": DECLARATION_PASSWORD}
    async with httpx.AsyncClient(timeout=20) as client:
        as_bearer = await client.post(url, json=body, headers=bearer(bound))
        assert as_bearer.status_code == 401
        assert as_bearer.json()["code"] == "invalid_dpop_proof"
        proof = key.proof("POST", url, bound)
        headers = {"Authorization": f"DPoP {bound}", "DPoP": proof}
        answer = await client.post(url, json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["token_type"] == "DPoP"
        assert claims_of(answer.json()["unit_token"])["cnf"] == {"jkt": key.jkt}
        replayed = await client.post(url, json=body, headers=headers)
        assert replayed.status_code == 401
        assert replayed.json()["code"] == "invalid_dpop_proof"
        elsewhere = key.proof("POST", f"{base}/v1/units/{tin}/enter", bound)
        wrong_url = await client.post(url, json=body, headers={"Authorization": f"DPoP {bound}", "DPoP": elsewhere})
        assert wrong_url.status_code == 401


async def test_a_database_outage_is_a_503_and_passes(units_stack: UnitsStack, http: httpx.AsyncClient) -> None:
    """The units service alone on PostgreSQL: the database goes away (503 database_unavailable, with
    Retry-After, readiness fails) and comes back (served again, no restart)."""
    url, name = await asyncio.to_thread(create_postgres_database)
    person = await new_person(units_stack, http)
    settings = Settings(
        public_url="http://127.0.0.1:1",
        database_url=url,
        keys_file=str(units_stack.tmp / "outage-keys.json"),
        units_gateway_url=units_stack.gateway_url,
        **FAST_HASHING,
    )

    async def cut(allowed: bool) -> None:
        connection = await asyncpg.connect(POSTGRES, timeout=5)
        try:
            await connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                await connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
                )
        finally:
            await connection.close()

    try:
        with AppServer(create_standalone_app(settings)) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=20) as service:
                assert (await service.get("/units/v1/units", headers=person.headers)).json()["units"] == []
                await cut(allowed=False)
                down = await service.get("/units/v1/units", headers=person.headers)
                assert down.status_code == 503, down.text
                assert down.json()["code"] == "database_unavailable"
                assert int(down.headers["retry-after"]) > 0
                assert (await service.get("/readyz")).status_code == 503
                await cut(allowed=True)
                assert (await service.get("/units/v1/units", headers=person.headers)).status_code == 200
                assert (await service.get("/readyz")).status_code == 200
    finally:
        await asyncio.to_thread(drop_postgres_database, name)
