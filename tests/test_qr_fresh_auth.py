"""A QR login is not a fresh authentication unless the phone proves one (issue 15, item 1).

The attack: a phone session older than the step-up limit mints its own QR code, scans and confirms
it, and uses the desktop token to reset a declaration password (which needs a recent login). The
desktop's session keeps the phone's auth_time, so the reset is refused; a confirm that carries the
person's password makes a fresh login, and the reset succeeds. A real gateway with the units service
mounted, over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import new_identity
from tests.support.accounts import fresh_ip, grant_staff, solved_captcha
from tests.support.clients import bearer, mint, phone_login
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings
from tests.support.units import DECLARATION_PASSWORD, new_tin

pytestmark = pytest.mark.anyio
STEP_UP_LIMIT = 2  # seconds: the declaration-password reset needs a login at most this old


@pytest.fixture(scope="module")
def stepup_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("stepup"), port, units_reset_max_auth_age=STEP_UP_LIMIT)
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


@pytest.fixture
async def http(stepup_gateway: ThreadedGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stepup_gateway.base_url, timeout=20) as client:
        yield client


def person_in(gateway: ThreadedGateway) -> dict[str, str]:
    identity = new_identity()
    identity["id"] = gateway.add_person(**identity)
    return identity


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def unit_with_legal_rep(gateway: ThreadedGateway, http: httpx.AsyncClient, legal_rep: dict[str, str]) -> str:
    staff = person_in(gateway)
    await asyncio.to_thread(grant_staff, gateway, staff["login_name"])
    staff_token = await phone_login(http, staff, client_id="web")
    tin = new_tin()
    created = await http.post(
        "/units/v1/admin/units",
        json={"tin": tin, "name": f"测试单位{tin[-6:]}有限公司", "declaration_password": DECLARATION_PASSWORD},
        headers=bearer(staff_token),
    )
    assert created.status_code == 201, created.text
    role = {"identifier": legal_rep["login_name"], "role": "legal_rep"}
    assigned = await http.put(f"/units/v1/admin/units/{tin}/roles", json=role, headers=bearer(staff_token))
    assert assigned.status_code == 200, assigned.text
    return tin


async def desktop_by_qr(http: httpx.AsyncClient, phone: str, confirm_body: dict[str, str] | None = None) -> Any:
    """The phone mints a code as a desktop would, scans and confirms it; the desktop's tokens."""
    minted = await mint(http)
    qr_id = minted["qr_id"]
    assert (await http.post(f"/v1/qr/{qr_id}/scan", headers=bearer(phone))).status_code == 200
    confirmed = await http.post(f"/v1/qr/{qr_id}/confirm", headers={**bearer(phone), **fresh_ip()}, json=confirm_body)
    assert confirmed.status_code == 204, confirmed.text
    state = await http.get(f"/v1/qr/{qr_id}/state", headers=bearer(minted["waiter_token"]))
    return state.json()["token"]


async def reset(http: httpx.AsyncClient, tin: str, token: str) -> httpx.Response:
    return await http.put(
        f"/units/v1/units/{tin}/declaration-password", json={"new_password": "Fresh-4321"}, headers=bearer(token)
    )


async def test_an_old_phone_session_cannot_step_up_by_confirming_its_own_qr(
    stepup_gateway: ThreadedGateway, http: httpx.AsyncClient
) -> None:
    legal_rep = person_in(stepup_gateway)
    tin = await unit_with_legal_rep(stepup_gateway, http, legal_rep)
    phone = await phone_login(http, legal_rep)
    await asyncio.sleep(STEP_UP_LIMIT + 1.2)  # the phone's login is now older than the limit
    refused = await reset(http, tin, phone)
    assert (refused.status_code, refused.json()["code"]) == (401, "insufficient_user_authentication")

    desktop = await desktop_by_qr(http, phone)  # the attack: a QR of its own, confirmed without a password
    claims = claims_of(desktop["access_token"])
    assert claims["auth_time"] == claims_of(phone)["auth_time"]
    assert claims["amr"] == ["qr"]
    refused = await reset(http, tin, desktop["access_token"])
    assert (refused.status_code, refused.json()["code"]) == (401, "insufficient_user_authentication")

    # A confirm with a wrong password is refused as a login would be, and confirms nothing.
    minted = await mint(http)
    assert (await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))).status_code == 200
    wrong = await http.post(
        f"/v1/qr/{minted['qr_id']}/confirm", headers={**bearer(phone), **fresh_ip()}, json={"password": "Wrong-123"}
    )
    assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_credentials")
    assert wrong.json()["attempts_left"] == 4
    state = await http.get(f"/v1/qr/{minted['qr_id']}/state", headers=bearer(minted["waiter_token"]))
    assert state.json()["state"] == "scanned"
    # The person's guard now wants a captcha, as after a wrong password at a login.
    again = await http.post(
        f"/v1/qr/{minted['qr_id']}/confirm",
        headers={**bearer(phone), **fresh_ip()},
        json={"password": legal_rep["password"]},
    )
    assert (again.status_code, again.json()["code"]) == (400, "captcha_required")
    captcha = await solved_captcha(http)
    fresh = await http.post(
        f"/v1/qr/{minted['qr_id']}/confirm",
        headers={**bearer(phone), **fresh_ip()},
        json={"password": legal_rep["password"], **captcha},
    )
    assert fresh.status_code == 204, fresh.text
    state = await http.get(f"/v1/qr/{minted['qr_id']}/state", headers=bearer(minted["waiter_token"]))
    tokens = state.json()["token"]
    claims = claims_of(tokens["access_token"])
    assert claims["amr"] == ["qr", "pwd"]
    assert claims["auth_time"] > claims_of(phone)["auth_time"] + STEP_UP_LIMIT
    accepted = await reset(http, tin, tokens["access_token"])
    assert accepted.status_code == 204, accepted.text


async def test_a_confirm_body_is_checked(stepup_gateway: ThreadedGateway, http: httpx.AsyncClient) -> None:
    person = person_in(stepup_gateway)
    phone = await phone_login(http, person)
    minted = await mint(http)
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
    for body in ({"password": ""}, {"pasword": "x"}, {"password": 5}):
        answer = await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone), json=body)
        assert (answer.status_code, answer.json()["code"]) == (400, "invalid_request"), body
    text = await http.post(
        f"/v1/qr/{minted['qr_id']}/confirm", headers={**bearer(phone), "Content-Type": "text/plain"}, content=b"pw"
    )
    assert text.status_code == 415
    state = await http.get(f"/v1/qr/{minted['qr_id']}/state", headers=bearer(minted["waiter_token"]))
    assert state.json()["state"] == "scanned"


async def test_a_qr_made_session_ends_when_the_phone_s_refresh_token_is_reused(
    stepup_gateway: ThreadedGateway, http: httpx.AsyncClient
) -> None:
    person = person_in(stepup_gateway)
    logged_in = await http.post(
        "/v1/login/password",
        json={"identifier": person["phone"], "password": person["password"], "client_id": "mobile-app"},
        headers=fresh_ip(),
    )
    phone_tokens = logged_in.json()
    desktop = await desktop_by_qr(http, phone_tokens["access_token"])
    refresh = {"grant_type": "refresh_token", "client_id": "mobile-app", "refresh_token": phone_tokens["refresh_token"]}
    assert (await http.post("/v1/token", data=refresh)).status_code == 200
    reused = await http.post("/v1/token", data=refresh)  # the old refresh token again: theft
    assert (reused.status_code, reused.json()["code"]) == (400, "refresh_token_reused")
    desktop_refresh = {
        "grant_type": "refresh_token",
        "client_id": "withholding-desktop",
        "refresh_token": desktop["refresh_token"],
    }
    ended = await http.post("/v1/token", data=desktop_refresh)
    assert (ended.status_code, ended.json()["error"]) == (400, "invalid_grant")
    sessions = await http.get("/v1/sessions", headers=bearer(desktop["access_token"]))
    assert (sessions.status_code, sessions.json()["code"]) == (401, "session_ended")
