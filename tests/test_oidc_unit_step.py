"""The unit step inside sign-in (gateway/oidc/units_step.py): a relying party asking for scope `unit`
gets, after the login, the unit verification on the same sign-in page, and its tokens carry `unit`.

One gateway with the units service mounted (it trusts the gateway over HTTP, as always); units, roles and
declaration passwords are made through the hall API, as tests/support/units.py does; Chromium drives the
page; a real relying party receives the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gateway import cli
from tests.support.accounts import fresh_ip
from tests.support.axe import assert_no_axe_violations
from tests.support.browser import screenshot
from tests.support.browser_fixtures import launched_browser
from tests.support.gateway_server import (
    CAPTCHA_ANSWER,
    ThreadedGateway,
    oidc_gateway,
)
from tests.support.schemas import assert_valid
from tests.support.units import DECLARATION_PASSWORD, claims_of, new_tin
from tests.test_oidc_signin import (
    CSRF,
    FORM,
    Authorization,
    RelyingPartySite,
    authorization,
    exchange,
    password_attempt,
    person,
    relying_party_site,
    returned,
)
from tests.test_protocols import assert_documented

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

with contextlib.suppress(ImportError):  # without Playwright the `browser` fixture skips (fails under CI=true)
    from playwright.sync_api import expect

pytestmark = pytest.mark.slow

CLIENT = "unit-portal"
SCOPE = "openid unit offline_access"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launched_browser()


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    yield from oidc_gateway(tmp_path_factory.mktemp("unit-step"))


@pytest.fixture(scope="module")
def rp(sso: ThreadedGateway) -> Iterator[RelyingPartySite]:
    yield from relying_party_site(sso, [(CLIENT, "单位办税门户", SCOPE.split())])


def login(sso: ThreadedGateway, identity: dict[str, str]) -> str:
    answer = httpx.post(
        f"{sso.base_url}/v1/login/password",
        json={"identifier": identity["login_name"], "password": identity["password"], "client_id": "web"},
        headers=fresh_ip(),
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


@pytest.fixture(scope="module")
def hall(sso: ThreadedGateway) -> Iterator[httpx.Client]:
    """Hall staff, talking to the mounted units service."""
    staff = person(sso)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, cli.grant_staff(sso.settings, staff["login_name"])).result()
    token = login(sso, staff)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{sso.base_url}/units", headers=headers, timeout=20) as client:
        yield client


def new_unit(hall: httpx.Client, *roles: tuple[str, dict[str, str]]) -> str:
    tin = new_tin()
    body = {"tin": tin, "name": f"测试单位{tin[-6:]}有限公司", "declaration_password": DECLARATION_PASSWORD}
    created = hall.post("/v1/admin/units", json=body)
    assert created.status_code == 201, created.text
    for role, who in roles:
        assigned = hall.put(f"/v1/admin/units/{tin}/roles", json={"identifier": who["login_name"], "role": role})
        assert assigned.status_code == 200, assigned.text
    return tin


def sign_in(sso: ThreadedGateway, rp: RelyingPartySite, page: Page, who: dict[str, str]) -> Authorization:
    """Password sign-in on the page, up to the unit step."""
    request = authorization(sso, rp, CLIENT, scope=SCOPE)
    page.goto(request.url)
    page.wait_for_url(re.compile(r"/signin\?request="))
    page.click("#tab-password")
    password_attempt(page, who["login_name"], who["password"])
    expect(page.locator("#units")).to_be_visible()
    expect(page.locator("#panel-password")).to_be_hidden()
    assert "qrgate-sso" in {cookie["name"] for cookie in page.context.cookies(sso.base_url)}  # signed in already
    return request


def tokens(sso: ThreadedGateway, request: Authorization, code: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The id_token's claims (checked by `exchange`) and the token response."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": request.verifier,
        "redirect_uri": request.redirect_uri,
        "client_id": request.client_id,
    }
    answer = httpx.post(f"{sso.base_url}/v1/token", data=form)
    assert answer.status_code == 200, answer.text
    return claims_of(answer.json()["id_token"]), answer.json()


def test_declaration_password_with_captcha_then_tokens_carry_the_unit(
    sso: ThreadedGateway, rp: RelyingPartySite, hall: httpx.Client, page: Page
) -> None:
    clerk = person(sso)
    tin = new_unit(hall, ("tax_staff", clerk))
    request = sign_in(sso, rp, page, clerk)

    # One unit: straight to its declaration password.
    expect(page.locator("#declaration")).to_be_visible()
    expect(page.locator("#unit-chosen")).to_contain_text(tin)
    expect(page.locator("#unit-captcha-row")).to_be_hidden()
    page.fill("#declaration-password", "Wrong-0001")
    page.click("#declaration-submit")
    expect(page.locator("#declaration-message")).to_have_text("申报密码错误，还可尝试4次")
    expect(page.locator("#unit-captcha-row")).to_be_visible()
    expect(page.locator("#unit-captcha-image")).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    screenshot(page, "signin-unit-step")
    assert_no_axe_violations(page, "sign-in page, unit step: declaration password with captcha")
    page.fill("#declaration-password", DECLARATION_PASSWORD)
    page.fill("#unit-captcha-answer", CAPTCHA_ANSWER)
    page.click("#declaration-submit")

    got = returned(page, rp, request)
    assert set(got) == {"code", "state", "iss"}
    expected = {"tin": tin, "role": "tax_staff", "via": "declaration_password"}
    claims = exchange(sso, request, got["code"])  # the id_token's signature, iss, aud and nonce checked
    assert claims["unit"] == expected
    assert claims["sub"] == clerk["id"]
    assert "qrgate-signin" not in {cookie["name"] for cookie in page.context.cookies(sso.base_url)}

    # A second sign-in gives the tokens themselves (the code above is spent).
    again = authorization(sso, rp, CLIENT, scope=SCOPE)
    page.goto(again.url)  # signed in already: the page opens at the unit step
    expect(page.locator("#units")).to_be_visible()
    expect(page.locator("#panel-password")).to_be_hidden()
    page.fill("#declaration-password", DECLARATION_PASSWORD)
    page.click("#declaration-submit")
    code = returned(page, rp, again)["code"]
    id_claims, answer = tokens(sso, again, code)
    assert id_claims["unit"] == expected
    access = claims_of(answer["access_token"])
    assert access["unit"] == expected
    assert access["scope"] == SCOPE
    info = httpx.get(f"{sso.base_url}/userinfo", headers={"Authorization": f"Bearer {answer['access_token']}"})
    assert info.status_code == 200, info.text
    assert info.json()["unit"] == expected
    assert_valid("id-token-claims.json", id_claims)
    assert_valid("access-token-claims.json", access)
    assert_valid("userinfo.json", info.json())

    refreshed = httpx.post(
        f"{sso.base_url}/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": answer["refresh_token"], "client_id": CLIENT},
    )
    assert refreshed.status_code == 200, refreshed.text
    assert claims_of(refreshed.json()["access_token"])["unit"] == expected


def test_an_authorized_person_picks_a_unit_and_enters_without_a_password(
    sso: ThreadedGateway, rp: RelyingPartySite, hall: httpx.Client, page: Page
) -> None:
    boss, clerk = person(sso), person(sso)
    first = new_unit(hall, ("legal_rep", boss), ("tax_staff", clerk))
    second = new_unit(hall, ("tax_staff", clerk))
    until = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0).isoformat()
    grant = {"grantee_identifier": clerk["login_name"], "grantee_name": clerk["name"], "valid_until": until}
    granted = httpx.post(
        f"{sso.base_url}/units/v1/units/{first}/authorizations",
        json=grant,
        headers={"Authorization": f"Bearer {login(sso, boss)}"},
    )
    assert granted.status_code == 201, granted.text

    request = sign_in(sso, rp, page, clerk)
    expect(page.locator("#unit-list li")).to_have_count(2)
    expect(page.locator("#declaration")).to_be_hidden()
    assert_no_axe_violations(page, "sign-in page, unit step: the unit list")
    page.click(f"#unit-list li[data-tin='{second}']")
    page.click(f"#unit-list li[data-tin='{first}']")
    page.click("#unit-enter")
    got = returned(page, rp, request)
    assert exchange(sso, request, got["code"])["unit"] == {"tin": first, "role": "tax_staff", "via": "authorization"}


def test_cancel_at_the_unit_step_sends_access_denied_and_keeps_the_browser_session(
    sso: ThreadedGateway, rp: RelyingPartySite, hall: httpx.Client, page: Page
) -> None:
    clerk = person(sso)
    new_unit(hall, ("tax_staff", clerk))
    request = sign_in(sso, rp, page, clerk)
    expect(page.locator("#declaration")).to_be_visible()
    page.click("#unit-cancel")
    got = returned(page, rp, request)
    assert (got["error"], got["iss"]) == ("access_denied", sso.base_url)
    assert "code" not in got
    # The person is still signed in: a relying party without `unit` gets its code at once.
    plain = authorization(sso, rp, CLIENT, scope="openid")
    page.goto(plain.url)
    claims = exchange(sso, plain, returned(page, rp, plain)["code"])
    assert claims["sub"] == clerk["id"]
    assert "unit" not in claims


def test_the_unit_step_over_http_answers_as_documented(
    sso: ThreadedGateway, rp: RelyingPartySite, hall: httpx.Client
) -> None:
    """As the page's script speaks: every answer held against openapi.yaml, refusals passed on."""
    clerk = person(sso)
    tin = new_unit(hall, ("tax_staff", clerk))
    with httpx.Client(base_url=sso.base_url, timeout=20) as http:
        request = authorization(sso, rp, CLIENT, scope=SCOPE)
        location = http.get(request.url).headers["location"]
        request_id = parse_qs(urlsplit(location).query)["request"][0]
        found = CSRF.search(http.get(location).text)
        assert found is not None

        def post(path: str, **fields: str) -> httpx.Response:
            data = {"request": request_id, "csrf": found.group(1), **fields}
            return http.post(path, data=data, headers={**FORM, **fresh_ip()})

        early = post("/signin/unit/list")
        assert assert_documented(early, "post", "/signin/unit/list")["code"] == "unit_step_not_started"
        forged = http.post("/signin/unit/list", data={"request": request_id, "csrf": "x" * 43}, headers=FORM)
        assert assert_documented(forged, "post", "/signin/unit/list")["code"] == "invalid_csrf_token"

        signed = post("/signin/password", identifier=clerk["login_name"], password=clerk["password"])
        assert assert_documented(signed, "post", "/signin/password") == {"unit_step": True}
        assert "qrgate-sso" in http.cookies

        listed = assert_documented(post("/signin/unit/list"), "post", "/signin/unit/list")
        assert [unit["tin"] for unit in listed["units"]] == [tin]
        wrong = post("/signin/unit/verify", tin=tin, declaration_password="Wrong-0001")
        assert assert_documented(wrong, "post", "/signin/unit/verify")["attempts_left"] == 4
        no_captcha = post("/signin/unit/verify", tin=tin, declaration_password=DECLARATION_PASSWORD)
        assert assert_documented(no_captcha, "post", "/signin/unit/verify")["code"] == "captcha_required"
        refused = assert_documented(post("/signin/unit/enter", tin=tin), "post", "/signin/unit/enter")
        assert refused["code"] == "declaration_password_required"
        bad_tin = post("/signin/unit/enter", tin="../../v1/admin")
        assert assert_documented(bad_tin, "post", "/signin/unit/enter")["code"] == "invalid_request"

        captcha = http.post("/units/v1/captcha").json()
        entered = post(
            "/signin/unit/verify",
            tin=tin,
            declaration_password=DECLARATION_PASSWORD,
            captcha_id=captcha["captcha_id"],
            captcha_answer=CAPTCHA_ANSWER,
        )
        target = assert_documented(entered, "post", "/signin/unit/verify")["redirect"]
        assert target.startswith(rp.callback + "?code=")
        gone = post("/signin/unit/cancel")
        assert assert_documented(gone, "post", "/signin/unit/cancel")["code"] == "signin_not_found"
