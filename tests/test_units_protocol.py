"""The units service against its contract in protocols/: every answer of a real journey through the
separate units process (and the legacy logins of the mounted one) has a status, media type and body
that openapi.yaml documents for its operation, and every body, token header and token claim set is
valid against its JSON Schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.schemas import assert_valid, jwt_parts, openapi, pointer
from tests.support.units import (
    DECLARATION_PASSWORD,
    Person,
    UnitsStack,
    captcha,
    issue_unit_certificate,
    new_person,
    new_tin,
)

pytestmark = pytest.mark.anyio


def documented(response: httpx.Response, method: str, path: str) -> Any:
    """Hold the answer against openapi.yaml's `method path`; returns the JSON body (or None)."""
    document = openapi()
    operation = document["paths"][path][method.lower()]
    answer = operation["responses"].get(str(response.status_code))
    assert answer is not None, f"{method} {path} does not document {response.status_code}: {response.text}"
    if "$ref" in answer:
        answer = pointer(document, answer["$ref"])
    for name, header in answer.get("headers", {}).items():
        header = pointer(document, header["$ref"]) if "$ref" in header else header
        if header.get("required"):
            assert name.lower() in response.headers, f"{method} {path} {response.status_code} lacks {name}"
    if "content" not in answer:
        assert response.content == b""
        return None
    media = response.headers["content-type"].split(";")[0]
    assert media in answer["content"], f"{method} {path} {response.status_code}: {media} is not documented"
    schema = answer["content"][media]["schema"]
    body = response.json()
    if "$ref" in schema:
        assert_valid(schema["$ref"].removeprefix("./schemas/"), body)
        return body
    assert_valid("problem.json", body)  # problems: problem.json narrowed to the operation's codes
    narrowed = schema["allOf"][1]["properties"]
    assert body["status"] == narrowed["status"]["const"]
    code = narrowed["code"]
    assert body["code"] in code.get("enum", [code.get("const")]), f"{method} {path}: {body['code']} not documented"
    for name in schema["allOf"][1].get("required", []):
        assert name in body
    return body


def check_unit_token(body: dict[str, Any]) -> dict[str, Any]:
    header, claims = jwt_parts(body["unit_token"])
    assert_valid("unit-token-header.json", header)
    assert_valid("unit-token-claims.json", claims)
    assert claims["unit"] == body["unit"]
    return claims


@pytest.fixture
async def http(units_stack: UnitsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=units_stack.units_url, timeout=20) as client:
        yield client


async def test_a_whole_journey_holds_to_the_contract(units_stack: UnitsStack, http: httpx.AsyncClient) -> None:
    staff, boss, clerk = [await new_person(units_stack, http, staff=i == 0) for i in range(3)]
    tin = new_tin()
    base = "/units/v1"

    async def call(person: Person | None, method: str, path: str, body: object = None) -> Any:
        concrete = path.replace("{tin}", tin)
        headers = person.headers if person else {}
        response = await http.request(method, concrete.removeprefix("/units"), json=body, headers=headers)
        return response, documented(response, method, path.split("?")[0])

    create = {"tin": tin, "name": "契约有限公司", "declaration_password": DECLARATION_PASSWORD}
    assert_valid("unit-create-request.json", create)
    _, created = await call(staff, "POST", f"{base}/admin/units", create)
    assert created["tin"] == tin
    for person, role in ((boss, "legal_rep"), (clerk, "tax_staff")):
        assignment = {"identifier": person.identity["login_name"], "role": role}
        assert_valid("unit-role-request.json", assignment)
        await call(staff, "PUT", f"{base}/admin/units/{{tin}}/roles", assignment)
    await call(clerk, "POST", f"{base}/admin/units", create)  # 403 forbidden_role

    _, listed = await call(clerk, "GET", f"{base}/units")
    assert listed["units"][0]["tin"] == tin
    response, _ = await call(clerk, "POST", f"{base}/units/{{tin}}/enter")
    assert response.status_code == 403
    wrong = {"declaration_password": "Wrong-000"}
    assert_valid("unit-verify-request.json", wrong)
    response, problem = await call(clerk, "POST", f"{base}/units/{{tin}}/verify", wrong)
    assert problem["code"] == "invalid_credentials"
    await call(clerk, "POST", f"{base}/units/{{tin}}/verify", wrong)  # 400 captcha_required
    captcha_answer = await http.post("/v1/captcha")
    documented(captcha_answer, "POST", f"{base}/captcha")
    right = {"declaration_password": DECLARATION_PASSWORD, **await captcha(http)}
    assert_valid("unit-verify-request.json", right)
    _, token = await call(clerk, "POST", f"{base}/units/{{tin}}/verify", right)
    check_unit_token(token)
    renew = {"unit_token": token["unit_token"]}
    assert_valid("unit-renew-request.json", renew)
    _, renewed = await call(clerk, "POST", f"{base}/unit-token/renew", renew)
    check_unit_token(renewed)
    await call(clerk, "POST", f"{base}/unit-token/renew", {"unit_token": "x.y.z"})  # 400

    grant = {
        "grantee_identifier": clerk.identity["phone"],
        "grantee_name": clerk.identity["name"],
        "valid_until": (datetime.now(UTC) + timedelta(days=7)).isoformat(),
    }
    assert_valid("unit-authorization-request.json", grant)
    await call(clerk, "POST", f"{base}/units/{{tin}}/authorizations", grant)  # 403 forbidden_unit_role
    _, authorization = await call(boss, "POST", f"{base}/units/{{tin}}/authorizations", grant)
    await call(boss, "GET", f"{base}/units/{{tin}}/authorizations")
    _, entered = await call(clerk, "POST", f"{base}/units/{{tin}}/enter")
    assert check_unit_token(entered)["unit"]["via"] == "authorization"
    revoke = f"{base}/units/{{tin}}/authorizations/{{authorization_id}}"
    response = await http.delete(
        revoke.removeprefix("/units")
        .replace("{tin}", tin)
        .replace("{authorization_id}", authorization["authorization_id"]),
        headers=boss.headers,
    )
    documented(response, "DELETE", revoke)

    reset = {"new_password": "Fresh-4321"}
    assert_valid("unit-declaration-password-request.json", reset)
    await call(clerk, "PUT", f"{base}/units/{{tin}}/declaration-password", reset)  # 403
    await call(boss, "PUT", f"{base}/units/{{tin}}/declaration-password", reset)  # 204
    await call(staff, "PUT", f"{base}/admin/units/{{tin}}/declaration-password", reset)  # 204

    _, challenge = await call(clerk, "POST", f"{base}/units/{{tin}}/ca/challenge")
    certificate = issue_unit_certificate(units_stack.pki.root, tin)
    proof = {
        "challenge_id": challenge["challenge_id"],
        "certificates": certificate.chain,
        "signature": certificate.sign(challenge["challenge"]),
    }
    assert_valid("unit-ca-proof-request.json", proof)
    _, by_ca = await call(clerk, "POST", f"{base}/units/{{tin}}/ca/verify", proof)
    check_unit_token(by_ca)
    await call(clerk, "POST", f"{base}/units/{{tin}}/ca/verify", proof)  # 400 challenge_invalid

    for path in ("/legacy/password-login", "/legacy/ca-challenge", "/legacy/ca-login"):
        response, problem = await call(None, "POST", f"{base}{path}", {})
        assert response.status_code == 410
    await call(None, "GET", f"{base}/units")  # 401
    response = await http.get("/.well-known/jwks.json")
    documented(response, "GET", "/units/.well-known/jwks.json")
    # The first unit link: an unknown TIN and a wrong pair read alike (401), then a right pair links.
    newcomer = await new_person(units_stack, http)
    for guess in ({"tin": new_tin(), "declaration_password": "Wrong-000"}, {"tin": tin, "declaration_password": "x"}):
        assert_valid("unit-link-request.json", guess)
        response, problem = await call(newcomer, "POST", f"{base}/units/link", guess)
        assert problem["code"] == "invalid_credentials"
    await call(newcomer, "POST", f"{base}/units/link", {"tin": "bad", "declaration_password": "x"})  # 400
    await call(newcomer, "POST", f"{base}/units/link", {"tin": tin, "declaration_password": "x"})  # 400 captcha
    link = {"tin": tin, "declaration_password": "Fresh-4321", **await captcha(http)}
    assert_valid("unit-link-request.json", link)
    _, linked = await call(newcomer, "POST", f"{base}/units/link", link)
    assert check_unit_token(linked)["unit"]["role"] == "tax_staff"
    _, listed = await call(newcomer, "GET", f"{base}/units")
    assert listed["person"]["display_name"].startswith(newcomer.identity["name"][0])
    for path in (f"{base}/units/{{tin}}/verify", f"{base}/units/{{tin}}/enter"):
        response = await http.post(path.removeprefix("/units").replace("{tin}", "bad"), headers=clerk.headers, json={})
        assert documented(response, "POST", path)["code"] in ("invalid_tin", "invalid_request")


async def test_legacy_answers_before_the_cutover_hold_to_the_contract(units_stack: UnitsStack) -> None:
    async with httpx.AsyncClient(base_url=units_stack.mounted_url, timeout=20) as mounted:
        staff = await new_person(units_stack, mounted, staff=True)
        tin = new_tin()
        await staff.post(
            "/v1/admin/units", {"tin": tin, "name": "旧式登录有限公司", "declaration_password": DECLARATION_PASSWORD}
        )
        login = {"tin": tin, "declaration_password": DECLARATION_PASSWORD}
        assert_valid("unit-legacy-password-login-request.json", login)
        answer = await mounted.post("/v1/legacy/password-login", json=login)
        token = documented(answer, "POST", "/units/v1/legacy/password-login")
        assert check_unit_token(token)["legacy"] is True
        request = {"tin": tin}
        assert_valid("unit-legacy-ca-challenge-request.json", request)
        challenge = documented(
            await mounted.post("/v1/legacy/ca-challenge", json=request), "POST", "/units/v1/legacy/ca-challenge"
        )
        certificate = issue_unit_certificate(units_stack.pki.root, new_tin())  # names another unit
        proof = {
            "challenge_id": challenge["challenge_id"],
            "certificates": certificate.chain,
            "signature": certificate.sign(challenge["challenge"]),
        }
        refused = documented(await mounted.post("/v1/legacy/ca-login", json=proof), "POST", "/units/v1/legacy/ca-login")
        assert refused["code"] == "certificate_wrong_unit"


async def test_insufficient_scope_answers_hold_to_the_contract(
    units_stack: UnitsStack, http: httpx.AsyncClient
) -> None:
    """Every operation that needs a token documents its 403 `insufficient_scope` (with the challenge)."""
    person = await new_person(units_stack, http)
    claims = jwt_parts(person.access_token)[1]
    assert_valid("access-token-claims.json", claims)
    tin = new_tin()

    def token(scope: str) -> dict[str, str]:
        signed = units_stack.gateway_issuer().access_token(
            subject=claims["sub"],
            client_id=claims["client_id"],
            session_id=claims["sid"],
            amr=claims["amr"],
            auth_time=claims["auth_time"],
            extra={"scope": scope},
        )
        return {"Authorization": f"Bearer {signed}"}

    calls = [
        ("GET", "/units/v1/units", "/v1/units", "openid", None),
        (
            "POST",
            "/units/v1/units/{tin}/verify",
            f"/v1/units/{tin}/verify",
            "units.read",
            {"declaration_password": "x"},
        ),
        ("POST", "/units/v1/units/{tin}/enter", f"/v1/units/{tin}/enter", "units.read", None),
        ("POST", "/units/v1/unit-token/renew", "/v1/unit-token/renew", "units.read", {"unit_token": "x"}),
        ("POST", "/units/v1/units/{tin}/authorizations", f"/v1/units/{tin}/authorizations", "units.verify", {}),
        ("GET", "/units/v1/units/{tin}/authorizations", f"/v1/units/{tin}/authorizations", "units.verify", None),
        (
            "DELETE",
            "/units/v1/units/{tin}/authorizations/{authorization_id}",
            f"/v1/units/{tin}/authorizations/a_{'x' * 20}",
            "units.verify",
            None,
        ),
        (
            "PUT",
            "/units/v1/units/{tin}/declaration-password",
            f"/v1/units/{tin}/declaration-password",
            "units.verify",
            {},
        ),
        ("POST", "/units/v1/units/{tin}/ca/challenge", f"/v1/units/{tin}/ca/challenge", "units.read", None),
        ("POST", "/units/v1/units/{tin}/ca/verify", f"/v1/units/{tin}/ca/verify", "units.read", {}),
        ("POST", "/units/v1/admin/units", "/v1/admin/units", "units.verify", {}),
        ("PUT", "/units/v1/admin/units/{tin}/roles", f"/v1/admin/units/{tin}/roles", "units.verify", {}),
        (
            "DELETE",
            "/units/v1/admin/units/{tin}/roles/{person_id}",
            f"/v1/admin/units/{tin}/roles/p_x",
            "units.verify",
            None,
        ),
        (
            "PUT",
            "/units/v1/admin/units/{tin}/declaration-password",
            f"/v1/admin/units/{tin}/declaration-password",
            "units.verify",
            {},
        ),
    ]
    for method, documented_path, path, scope, body in calls:
        answer = await http.request(method, path, headers=token(scope), json=body)
        problem = documented(answer, method, documented_path)
        assert answer.status_code == 403, (path, answer.text)
        assert problem["code"] == "insufficient_scope", path
        assert answer.headers["www-authenticate"].startswith('Bearer error="insufficient_scope", scope="units.')


async def test_session_ended_answers_hold_to_the_contract(units_stack: UnitsStack, http: httpx.AsyncClient) -> None:
    """After a logout at the gateway: the unit list (within 5 s) and a state-changing call (at once)."""
    person = await new_person(units_stack, http)
    tin = new_tin()
    async with httpx.AsyncClient(base_url=units_stack.gateway_url, timeout=20) as gateway:
        assert (await gateway.post("/v1/logout", headers=person.headers)).status_code == 204
    reset = await person.put(f"/v1/units/{tin}/declaration-password", {"new_password": "Other-0002"})
    assert documented(reset, "PUT", "/units/v1/units/{tin}/declaration-password")["code"] == "session_ended"
    for method, path, documented_path in (
        ("POST", f"/v1/units/{tin}/verify", "/units/v1/units/{tin}/verify"),
        ("POST", f"/v1/units/{tin}/enter", "/units/v1/units/{tin}/enter"),
        ("GET", "/v1/units", "/units/v1/units"),
    ):
        answer = await http.request(method, path, headers=person.headers, json={"declaration_password": "x"})
        assert documented(answer, method, documented_path)["code"] == "session_ended", path


async def test_the_standalone_units_service_has_the_gateways_server_defences(units_stack: UnitsStack) -> None:
    """`qrgate serve-units` runs on the same guarded HTTP protocol as `qrgate serve` (gateway/serving.py):
    an oversized request head is 431 problem+json, and malformed HTTP a problem+json 400."""
    host, port = units_stack.units.base_url.split("://", 1)[1].split(":")

    async def exchange(raw: bytes) -> tuple[int, dict[str, Any]]:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(raw)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout=10)
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"content-type: application/problem+json" in head.lower(), head
        return int(head[9:12]), json.loads(body)

    big = b"GET /units/v1/units HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 17_000 + b"\r\n\r\n"
    status, problem = await exchange(big)
    assert (status, problem["code"]) == (431, "headers_too_large")
    status, problem = await exchange(b"GET /units/v1/units HTTP/1.1\r\nHost x\r\n\r\n")
    assert (status, problem["code"]) == (400, "malformed_request")
