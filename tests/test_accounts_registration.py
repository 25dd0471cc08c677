"""Registration by hall code through the real server: codes (format, binding, single use, expiry,
guess limits), every completion rule with its own code, login afterwards, and ID types."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounts.registration import AGREEMENT_VERSION
from gateway.directory.db import create_engine
from gateway.directory.tables import person_registrations, registration_codes
from tests.conftest import new_identity
from tests.support.accounts import (
    SmsCodes,
    fresh_ip,
    identity_fields,
    issue_registration_code,
    login,
    new_staff,
    register,
    sms_challenge,
)
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

pytestmark = pytest.mark.anyio
Person = Callable[..., dict[str, str]]


@pytest.fixture
async def staff(gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Person) -> dict[str, str]:
    return await new_staff(http, gateway, make_person())


async def start(http: httpx.AsyncClient, person: dict[str, str], code: str, **headers: str) -> httpx.Response:
    body = {
        "method": "hall_code",
        "registration_code": code,
        "agreement_version": AGREEMENT_VERSION,
        **identity_fields(person),
    }
    return await http.post("/v1/registrations", json=body, headers=headers or fresh_ip())


async def test_hall_registration_then_login_by_phone_id_number_and_login_name(
    http: httpx.AsyncClient, codes: SmsCodes, staff: dict[str, str]
) -> None:
    person = new_identity()
    code = await issue_registration_code(http, staff, person)
    assert re.fullmatch(r"[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{6}", code)
    done = await register_with_code(http, codes, person, code)
    assert done["log_in_with"] == ["phone", "login_name", "id_number"]
    for identifier in ("phone", "id_number", "login_name"):
        response = await login(http, person[identifier], person["password"], fresh_ip())
        assert response.status_code == 200, (identifier, response.text)


async def register_with_code(
    http: httpx.AsyncClient, codes: SmsCodes, person: dict[str, str], code: str
) -> dict[str, Any]:
    ip = fresh_ip()
    started = await start(http, person, code.lower(), **ip)  # codes are case-insensitive
    assert started.status_code == 201, started.text
    assert set(started.json()) == {"registration_id", "registration_token", "expires_in"}
    challenge, sms = await sms_challenge(http, codes, {"purpose": "register", "phone": person["phone"]}, ip)
    completed = await http.post(
        f"/v1/registrations/{started.json()['registration_id']}/complete",
        json=completion(person, started.json()["registration_token"], challenge, sms),
        headers=ip,
    )
    assert completed.status_code == 201, completed.text
    body: dict[str, Any] = completed.json()
    return body


def completion(
    person: dict[str, str], token: str, challenge: str, sms: str, **overrides: str | None
) -> dict[str, str | None]:
    return {
        "registration_token": token,
        "login_name": person["login_name"],
        "password": person["password"],
        "phone": person["phone"],
        "sms_challenge_id": challenge,
        "sms_code": sms,
        "household_region": "110105",
        **overrides,
    }


async def test_a_code_registers_once(http: httpx.AsyncClient, codes: SmsCodes, staff: dict[str, str]) -> None:
    person = new_identity()
    code = await issue_registration_code(http, staff, person)
    first, second = await start(http, person, code), await start(http, person, code)
    assert first.status_code == second.status_code == 201
    ip = fresh_ip()
    challenge, sms = await sms_challenge(http, codes, {"purpose": "register", "phone": person["phone"]}, ip)
    done = await http.post(
        f"/v1/registrations/{first.json()['registration_id']}/complete",
        json=completion(person, first.json()["registration_token"], challenge, sms),
    )
    assert done.status_code == 201
    other = {**person, "login_name": person["login_name"] + "_b", "phone": "138" + person["phone"][3:]}
    challenge, sms = await sms_challenge(http, codes, {"purpose": "register", "phone": other["phone"]}, ip)
    twice = await http.post(
        f"/v1/registrations/{second.json()['registration_id']}/complete",
        json=completion(other, second.json()["registration_token"], challenge, sms),
    )
    assert (twice.status_code, twice.json()["code"]) == (409, "person_exists")
    again = await start(http, person, code)
    assert (again.status_code, again.json()["code"]) == (400, "registration_code_invalid")  # used up
    replay = await http.post(
        f"/v1/registrations/{first.json()['registration_id']}/complete",
        json=completion(person, first.json()["registration_token"], challenge, sms),
    )
    assert (replay.status_code, replay.json()["code"]) == (404, "registration_not_found")
    refused = await http.post("/v1/admin/registration-codes", json=identity_fields(person), headers=staff)
    assert (refused.status_code, refused.json()["code"]) == (409, "person_exists")


async def test_a_code_is_bound_to_its_identity(http: httpx.AsyncClient, staff: dict[str, str]) -> None:
    person, stranger = new_identity(), new_identity()
    code = await issue_registration_code(http, staff, person)
    assert (await start(http, stranger, code)).json()["code"] == "registration_code_invalid"
    assert (await start(http, {**person, "name": "李四"}, code)).json()["code"] == "registration_code_invalid"
    assert (await start(http, person, code)).status_code == 201


def set_expiry(database_url: str, id_number: str, when: datetime) -> None:
    async def update() -> None:
        engine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    registration_codes.update()
                    .where(registration_codes.c.id_number == id_number)
                    .values(expires_at=when)
                )
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, update()).result()


async def test_codes_expire_after_seven_days(
    gateway: ThreadedGateway, http: httpx.AsyncClient, staff: dict[str, str]
) -> None:
    person = new_identity()
    response = await http.post("/v1/admin/registration-codes", json=identity_fields(person), headers=staff)
    assert response.json()["expires_in"] == 7 * 24 * 3600
    issued_until = datetime.fromisoformat(response.json()["expires_at"])
    assert abs(issued_until - datetime.now(UTC) - timedelta(days=7)) < timedelta(minutes=1)
    code = response.json()["registration_code"]
    set_expiry(gateway.settings.database_url, person["id_number"], datetime.now(UTC) - timedelta(seconds=1))
    expired = await start(http, person, code)
    assert (expired.status_code, expired.json()["code"]) == (410, "registration_code_expired")
    # Apply again: the new code works, the old one no longer does.
    fresh = await issue_registration_code(http, staff, person)
    assert (await start(http, person, code)).json()["code"] == "registration_code_invalid"
    assert (await start(http, person, fresh)).status_code == 201


async def test_wrong_codes_are_limited_per_identity(http: httpx.AsyncClient, staff: dict[str, str]) -> None:
    person = new_identity()
    code = await issue_registration_code(http, staff, person)
    wrong = "22222" + ("3" if code[-1] != "3" else "4")
    lefts = []
    for _ in range(5):
        response = await start(http, person, wrong)  # a new address each time: the limit is per identity
        assert (response.status_code, response.json()["code"]) == (400, "registration_code_invalid")
        lefts.append(response.json()["attempts_left"])
    assert lefts == [4, 3, 2, 1, 0]
    exhausted = await start(http, person, code)
    assert (exhausted.status_code, exhausted.json()["code"]) == (400, "registration_code_exhausted")
    assert (await start(http, person, await issue_registration_code(http, staff, person))).status_code == 201


async def test_identity_checks_per_ip_are_limited(tmp_path: Path) -> None:
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path, port, identity_ip_max_attempts=2), port).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            ip = fresh_ip()
            answers = [await start(http, new_identity(), "ABCDEF", **ip) for _ in range(3)]
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [400, 400, 429]
    assert answers[2].json()["code"] == "too_many_requests"
    assert int(answers[2].headers["retry-after"]) >= 1


RULES: list[tuple[dict[str, str | None], int, str]] = [
    ({"login_name": "a"}, 400, "login_name_length"),
    ({"login_name": "a" * 17}, 400, "login_name_length"),
    ({"login_name": "12345678"}, 400, "login_name_all_digits"),
    ({"login_name": "bad name"}, 400, "login_name_characters"),
    ({"password": "Ab1!"}, 400, "password_length"),
    ({"password": "Abcdefgh1!Abcdef"}, 400, "password_length"),
    ({"password": "Abcd efg1"}, 400, "password_spaces"),
    ({"password": "abcdefgh1"}, 400, "password_too_simple"),
    # Issue 16's reproductions: a Chinese character is no "special character", a full-width digit no digit.
    ({"password": "abcdef中文1"}, 400, "password_invalid_character"),
    ({"password": "ABCDEFGH１"}, 400, "password_invalid_character"),
    ({"password": "Abcdefg1\u0001"}, 400, "password_invalid_character"),
    ({"password": "Abcdefg1\u0000"}, 400, "invalid_request"),  # NUL: refused in any string, said so
    ({"password": "Abcdefg1\U00020bb7"}, 400, "password_invalid_character"),
    ({"phone": "12345"}, 400, "invalid_phone"),
    ({"household_region": "1101"}, 400, "household_region_format"),
    ({"household_region": "99010５"}, 400, "household_region_format"),
    ({"household_region": "990105"}, 400, "household_region_unknown"),
    ({"household_region": "449999"}, 400, "household_region_unknown"),  # 广东 has no prefecture 99
    ({"household_region": "110103"}, 400, "household_region_unknown"),  # 崇文区, merged into 东城区 in 2010
    ({"household_region": "440100"}, 400, "household_region_not_county"),  # 广州市: choose its district
    ({"household_region": "440000"}, 400, "household_region_not_county"),
    ({"household_region": None}, 400, "household_region_required"),  # a resident ID card holder
    ({"sms_code": "000000x"}, 400, "sms_code_invalid"),
    ({"registration_token": "not-the-token"}, 403, "registration_token_invalid"),
]


async def test_each_completion_rule_has_its_own_code(
    http: httpx.AsyncClient, codes: SmsCodes, staff: dict[str, str], make_person: Person
) -> None:
    person = new_identity()
    started = await start(http, person, await issue_registration_code(http, staff, person))
    token, reg = started.json()["registration_token"], started.json()["registration_id"]
    challenge, sms = await sms_challenge(http, codes, {"purpose": "register", "phone": person["phone"]})
    for overrides, status, code in RULES:
        response = await http.post(
            f"/v1/registrations/{reg}/complete", json=completion(person, token, challenge, sms, **overrides)
        )
        assert (response.status_code, response.json()["code"]) == (status, code), overrides
        assert response.headers["content-type"] == "application/problem+json"
    existing = make_person()
    for field, code in (("login_name", "login_name_taken"), ("phone", "phone_taken")):
        overrides = {field: existing[field]}
        response = await http.post(
            f"/v1/registrations/{reg}/complete", json=completion(person, token, challenge, sms, **overrides)
        )
        assert (response.status_code, response.json()["code"]) == (409, code)
    # Nothing was used up by the refusals: the registration completes.
    done = await http.post(f"/v1/registrations/{reg}/complete", json=completion(person, token, challenge, sms))
    assert done.status_code == 201, done.text


async def test_login_names_are_case_sensitive_and_unique(
    http: httpx.AsyncClient, codes: SmsCodes, staff: dict[str, str]
) -> None:
    upper = {**new_identity(), "login_name": "Case_Name_X"}
    lower = {**new_identity(), "login_name": "case_name_x"}
    await register(http, codes, staff, upper)
    await register(http, codes, staff, lower)
    assert (await login(http, "Case_Name_X", upper["password"], fresh_ip())).status_code == 200
    assert (await login(http, "case_name_x", lower["password"], fresh_ip())).status_code == 200
    wrong_case = await login(http, "CASE_NAME_X", upper["password"], fresh_ip())
    assert wrong_case.status_code == 401


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"id_number": "110105199001011235"}, "invalid_id_number"),
        ({"id_type": "passport", "id_number": "E1", "nationality": "USA"}, "invalid_id_number"),
        ({"id_type": "passport", "id_number": "E12345678"}, "invalid_nationality"),
        ({"name": "张\u0007三"}, "invalid_name"),  # a control character
        ({"id_type": "hk_macau_permit", "id_number": "X12345678"}, "invalid_id_number"),
        ({"id_type": "foreign_permanent_resident", "id_number": "911022199001011231", "nationality": "USA"},
         "invalid_id_number"),
    ],
)  # fmt: skip
async def test_identity_rules(
    http: httpx.AsyncClient, staff: dict[str, str], fields: dict[str, str], code: str
) -> None:
    person = {**new_identity(), **fields}
    response = await http.post("/v1/admin/registration-codes", json=identity_fields(person), headers=staff)
    assert (response.status_code, response.json()["code"]) == (400, code)


@pytest.mark.parametrize(
    ("id_type", "id_number", "nationality"),
    [
        ("passport", "E{n:08d}", "USA"),
        ("hk_macau_permit", "H{n:08d}", None),
        ("taiwan_permit", "{n:08d}", None),
        ("foreign_permanent_resident", "USA{n:012d}", "USA"),
    ],
)
async def test_other_id_types_register_but_log_in_only_by_phone_or_login_name(
    http: httpx.AsyncClient,
    codes: SmsCodes,
    staff: dict[str, str],
    id_type: str,
    id_number: str,
    nationality: str | None,
) -> None:
    person = new_identity()
    n = int(person["login_name"].rsplit("_", 1)[1])
    person |= {"id_type": id_type, "id_number": id_number.format(n=n)}
    if nationality:
        person["nationality"] = nationality
    done = await register(http, codes, staff, person)
    assert done["log_in_with"] == ["phone", "login_name"]
    by_number = await login(http, person["id_number"], person["password"], fresh_ip())
    assert by_number.status_code == 401
    assert (await login(http, person["phone"], person["password"], fresh_ip())).status_code == 200


async def test_the_agreement_must_be_accepted_and_is_recorded(
    gateway: ThreadedGateway, http: httpx.AsyncClient, codes: SmsCodes, staff: dict[str, str]
) -> None:
    person = new_identity()
    code = await issue_registration_code(http, staff, person)
    body = {"method": "hall_code", "registration_code": code, **identity_fields(person)}
    missing = await http.post("/v1/registrations", json=body, headers=fresh_ip())
    assert (missing.status_code, missing.json()["code"]) == (400, "agreement_not_accepted")
    old = await http.post("/v1/registrations", json={**body, "agreement_version": "2019-11-09"}, headers=fresh_ip())
    assert (old.status_code, old.json()["code"]) == (400, "agreement_outdated")
    assert old.json()["agreement_version"] == AGREEMENT_VERSION
    before = datetime.now(UTC)
    done = await register(http, codes, staff, person)  # the helper accepts the current version
    recorded = registration_record(gateway.settings.database_url, str(done["person_id"]))
    assert recorded["agreement_version"] == AGREEMENT_VERSION
    accepted_at = recorded["agreement_accepted_at"]
    assert isinstance(accepted_at, datetime)
    assert before - timedelta(seconds=1) <= accepted_at.replace(tzinfo=UTC) <= datetime.now(UTC)
    assert recorded["household_region"] == "110105"


def registration_record(database_url: str, person_id: str) -> dict[str, object]:
    async def read() -> dict[str, object]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                query = person_registrations.select().where(person_registrations.c.person_id == person_id)
                row = (await conn.execute(query)).one()
                return dict(row._mapping)
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


async def test_no_household_region_is_asked_of_people_without_a_mainland_household(
    gateway: ThreadedGateway, http: httpx.AsyncClient, codes: SmsCodes, staff: dict[str, str]
) -> None:
    person = new_identity()
    n = int(person["login_name"].rsplit("_", 1)[1])
    person |= {"id_type": "passport", "id_number": f"E{n:08d}", "nationality": "USA"}
    code = await issue_registration_code(http, staff, person)
    started = await start(http, person, code)
    challenge, sms = await sms_challenge(http, codes, {"purpose": "register", "phone": person["phone"]})
    body = completion(person, started.json()["registration_token"], challenge, sms)
    del body["household_region"]
    done = await http.post(f"/v1/registrations/{started.json()['registration_id']}/complete", json=body)
    assert done.status_code == 201, done.text
    assert registration_record(gateway.settings.database_url, done.json()["person_id"])["household_region"] is None
