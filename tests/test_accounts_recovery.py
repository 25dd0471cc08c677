"""Forgotten passwords and hall resets through the real server: identity + SMS code to the
registered phone -> single-use reset ticket -> new password; unlocks, ends sessions, audits."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.support.accounts import (
    SmsCodes,
    access_token,
    audit_kinds,
    bearer,
    fresh_ip,
    identity_fields,
    login,
    new_staff,
    sms_challenge,
    solved_captcha,
)
from tests.support.gateway_server import ThreadedGateway
from tests.support.schemas import assert_valid

pytestmark = pytest.mark.anyio
Person = Callable[..., dict[str, str]]
NEW_PASSWORD = "N3w-Secret!"


async def lock_out(http: httpx.AsyncClient, person: dict[str, str]) -> None:
    await login(http, person["phone"], "Wrong-pass1")
    for _ in range(4):
        last = await login(http, person["phone"], "Wrong-pass1", **await solved_captcha(http))
    assert last.status_code == 423


async def reset_ticket(http: httpx.AsyncClient, codes: SmsCodes, person: dict[str, str]) -> str:
    body = {"purpose": "reset_password", "identity": identity_fields(person)}
    challenge, code = await sms_challenge(http, codes, body)
    response = await http.post(
        "/v1/password/forgot",
        json={**identity_fields(person), "sms_challenge_id": challenge, "sms_code": code},
        headers=fresh_ip(),
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["expires_in"] == 600
    ticket: str = response.json()["reset_ticket"]
    return ticket


async def test_forgot_password_resets_unlocks_ends_sessions_and_audits(
    gateway: ThreadedGateway, http: httpx.AsyncClient, codes: SmsCodes, make_person: Person
) -> None:
    person = make_person()
    session = await http.post(
        "/v1/login/password", json={"identifier": person["phone"], "password": person["password"], "client_id": "web"}
    )
    refresh_token = session.json()["refresh_token"]
    await lock_out(http, person)
    ticket = await reset_ticket(http, codes, person)
    weak = await http.post("/v1/password/reset", json={"reset_ticket": ticket, "new_password": "weakpass"})
    assert (weak.status_code, weak.json()["code"]) == (400, "password_too_simple")  # the ticket survives a broken rule
    done = await http.post("/v1/password/reset", json={"reset_ticket": ticket, "new_password": NEW_PASSWORD})
    assert done.status_code == 204
    again = await http.post("/v1/password/reset", json={"reset_ticket": ticket, "new_password": NEW_PASSWORD})
    assert (again.status_code, again.json()["code"]) == (400, "reset_ticket_invalid")
    # Unlocked, counters and captcha requirement cleared: the new password works at once.
    assert (await login(http, person["phone"], NEW_PASSWORD)).status_code == 200
    assert (await login(http, person["login_name"], person["password"])).json()["attempts_left"] == 4
    # The sessions from before the reset are over.
    refreshed = await http.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "web"}
    )
    assert refreshed.status_code == 400
    kinds = audit_kinds(gateway.settings.database_url, person["id"])
    assert kinds == ["account_locked", "password_reset", "account_unlocked"]


async def test_forgot_password_needs_the_right_identity_and_code(
    http: httpx.AsyncClient, codes: SmsCodes, make_person: Person
) -> None:
    person = make_person()
    challenge, code = await sms_challenge(
        http, codes, {"purpose": "reset_password", "identity": identity_fields(person)}
    )
    wrong_name = await http.post(
        "/v1/password/forgot",
        json={**identity_fields(person), "name": "李四", "sms_challenge_id": challenge, "sms_code": code},
    )
    # A wrong name is an identity no account has: its code reads as wrong, never as "no such person".
    assert (wrong_name.status_code, wrong_name.json()["code"]) == (400, "sms_code_invalid")
    # A register code for the same phone is no reset code.
    other_challenge, other_code = await sms_challenge(http, codes, {"purpose": "register", "phone": person["phone"]})
    wrong_purpose = await http.post(
        "/v1/password/forgot",
        json={**identity_fields(person), "sms_challenge_id": other_challenge, "sms_code": other_code},
    )
    assert (wrong_purpose.status_code, wrong_purpose.json()["code"]) == (400, "sms_code_invalid")
    ok = await http.post(
        "/v1/password/forgot", json={**identity_fields(person), "sms_challenge_id": challenge, "sms_code": code}
    )
    assert ok.status_code == 200
    replay = await http.post(
        "/v1/password/forgot", json={**identity_fields(person), "sms_challenge_id": challenge, "sms_code": code}
    )
    assert (replay.status_code, replay.json()["code"]) == (400, "sms_code_invalid")  # single use


async def test_bad_tickets_are_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/password/reset", json={"reset_ticket": "x" * 43, "new_password": NEW_PASSWORD})
    assert (response.status_code, response.json()["code"]) == (400, "reset_ticket_invalid")


async def test_hall_reset_with_a_temporary_password(
    gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Person
) -> None:
    staff_person = make_person()
    staff = await new_staff(http, gateway, staff_person)
    person = make_person()
    person_token = await access_token(http, person)
    await lock_out(http, person)
    body = {**identity_fields(person), "mode": "temporary_password"}
    response = await http.post("/v1/admin/password-resets", json=body, headers=staff)
    assert response.status_code == 200, response.text
    temporary = response.json()["temporary_password"]
    # The person's earlier session has ended: its access token no longer authenticates.
    ended = await http.post("/v1/admin/registration-codes", json=identity_fields(person), headers=bearer(person_token))
    assert ended.status_code == 401
    assert audit_kinds(gateway.settings.database_url, person["id"])[-2:] == ["password_reset", "account_unlocked"]
    # The first login with it issues nothing: the temporary password must be changed first.
    first = await login(http, person["phone"], temporary, fresh_ip())
    assert (first.status_code, first.json()["code"]) == (403, "password_change_required")
    assert "access_token" not in first.json()
    assert first.headers["content-type"] == "application/problem+json"
    assert_valid("problem.json", first.json())
    ticket, expires_in = first.json()["change_ticket"], first.json()["expires_in"]
    assert expires_in == gateway.settings.reset_ticket_ttl
    again = await login(http, person["phone"], temporary, fresh_ip())
    assert again.json()["code"] == "password_change_required"  # every login, until it is changed
    weak = await http.post("/v1/password/reset", json={"reset_ticket": ticket, "new_password": "abcdef中文1"})
    assert (weak.status_code, weak.json()["code"]) == (400, "password_invalid_character")
    done = await http.post("/v1/password/reset", json={"reset_ticket": ticket, "new_password": NEW_PASSWORD})
    assert done.status_code == 204
    assert (await login(http, person["phone"], NEW_PASSWORD, fresh_ip())).status_code == 200
    assert (await login(http, person["phone"], temporary, fresh_ip())).status_code == 401
    replay = await http.post("/v1/password/reset", json={"reset_ticket": ticket, "new_password": NEW_PASSWORD})
    assert (replay.status_code, replay.json()["code"]) == (400, "reset_ticket_invalid")  # single use


async def test_a_reset_ticket_clears_a_temporary_password(
    gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Person
) -> None:
    """The forgotten-password path after a hall reset: the new password is the person's own."""
    staff = await new_staff(http, gateway, make_person())
    person = make_person()
    body = {**identity_fields(person), "mode": "temporary_password"}
    temporary = (await http.post("/v1/admin/password-resets", json=body, headers=staff)).json()["temporary_password"]
    assert (await login(http, person["login_name"], temporary, fresh_ip())).status_code == 403
    body = {**identity_fields(person), "mode": "reset_ticket"}
    ticket = (await http.post("/v1/admin/password-resets", json=body, headers=staff)).json()["reset_ticket"]
    done = await http.post("/v1/password/reset", json={"reset_ticket": ticket, "new_password": NEW_PASSWORD})
    assert done.status_code == 204
    assert (await login(http, person["login_name"], NEW_PASSWORD, fresh_ip())).status_code == 200


async def test_hall_reset_with_a_ticket(gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Person) -> None:
    staff = await new_staff(http, gateway, make_person())
    person = make_person()
    body = {**identity_fields(person), "mode": "reset_ticket"}
    response = await http.post("/v1/admin/password-resets", json=body, headers=staff)
    assert response.status_code == 200
    ticket = response.json()["reset_ticket"]
    done = await http.post("/v1/password/reset", json={"reset_ticket": ticket, "new_password": NEW_PASSWORD})
    assert done.status_code == 204
    assert (await login(http, person["login_name"], NEW_PASSWORD)).status_code == 200
    unknown = await http.post("/v1/admin/password-resets", json={**body, "name": "不存在"}, headers=staff)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "identity_not_found")
