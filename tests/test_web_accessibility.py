"""Every page and state people see passes axe-core's WCAG 2.1 A and AA rules (tests/support/axe.py),
in headless Chromium against real gateways, with the pages' Content-Security-Policy intact: the desktop
login (password tab with the on-screen keyboard open, shifted, on its symbols, closed; QR tab, the
app-download code, scanned, cancelled; captcha; locked; English), the unit list, the declaration
password, the logged-in screen, the phone simulator's screens, the camera landing page, and the
OpenID sign-in page with its error and logout pages.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from gateway.oidc.http import MAX_QUERY
from gateway.web.demo import DemoAccount
from tests.support.axe import assert_no_axe_violations
from tests.support.browser_fixtures import launched_browser
from tests.support.gateway_server import CAPTCHA_ANSWER, ThreadedGateway
from tests.test_oidc_signin import RelyingPartySite, authorization, rp, sso  # noqa: F401 (fixtures)
from tests.test_oidc_signin import person as sso_person
from tests.test_web_pages import (  # noqa: F401 (demo_gateway, phone_for: fixtures)
    Person,
    PhoneFor,
    demo_gateway,
    mint_elsewhere,
    password_attempt,
    phone_for,
    phone_login,
    wait_for_qr,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
with contextlib.suppress(ImportError):  # without Playwright the `browser` fixture skips (fails under CI=true)
    from playwright.sync_api import expect

ANY_SRC = re.compile(".")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """This module's own Chromium (async modules may follow: see browser_fixtures.launched_browser)."""
    yield from launched_browser()


def test_desktop_login_states(
    gateway: ThreadedGateway,
    page: Page,
    make_person: Person,
    phone_for: PhoneFor,  # noqa: F811 (the fixture imported above)
) -> None:
    person = make_person()
    page.goto(gateway.base_url + "/")
    expect(page.locator(".keyboard")).to_be_visible()
    assert_no_axe_violations(page, "desktop login, password tab, on-screen keyboard open")
    page.click('[data-action="shift"]')
    assert_no_axe_violations(page, "desktop login, on-screen keyboard shifted")
    page.click('.kb-page[data-page="symbols"]')
    assert_no_axe_violations(page, "desktop login, on-screen keyboard's symbols")
    page.click(".kb-close")
    assert_no_axe_violations(page, "desktop login, on-screen keyboard closed")

    password_attempt(page, person["login_name"], "Wrong-pass9")
    expect(page.locator("#captcha-image")).to_have_attribute("src", ANY_SRC)
    assert_no_axe_violations(page, "desktop login, captcha shown")
    for _ in range(4):
        expect(page.locator("#captcha-image")).to_have_attribute("src", ANY_SRC)
        password_attempt(page, person["login_name"], "Wrong-pass9", CAPTCHA_ANSWER)
    expect(page.locator("#password-submit")).to_be_disabled()
    assert_no_axe_violations(page, "desktop login, account locked")

    page.goto(gateway.base_url + "/?lang=en")
    assert_no_axe_violations(page, "desktop login in English, password tab")
    page.click("#tab-qr")
    wait_for_qr(page)
    assert_no_axe_violations(page, "desktop login in English, QR tab")
    page.click("#lang")
    page.click("#app-download-toggle")
    page.wait_for_function("document.getElementById('app-download-image').naturalWidth > 0")
    assert_no_axe_violations(page, "desktop login, QR tab, app-download code shown")

    phone = phone_for(gateway, make_person())
    qr_id = wait_for_qr(page)
    assert phone.scan(qr_id).status_code == 200
    expect(page.locator("#qr-status")).to_contain_text("张*")
    assert_no_axe_violations(page, "desktop login, QR code scanned")
    assert phone.cancel(qr_id).status_code == 204
    expect(page.locator("#qr-refresh")).to_be_visible()
    assert_no_axe_violations(page, "desktop login, QR code cancelled (refresh offered)")


def test_unit_list_declaration_password_and_done(
    demo_gateway: tuple[ThreadedGateway, DemoAccount],  # noqa: F811 (the fixture imported above)
    page: Page,
) -> None:
    gateway, account = demo_gateway
    page.goto(gateway.base_url + "/")
    password_attempt(page, account.login_name, account.password)
    page.locator("#units").wait_for(state="visible")
    expect(page.locator("#unit-list li")).to_have_count(2)
    assert_no_axe_violations(page, "unit list")
    page.locator('#unit-list li[data-tin="91310115MA1K4D2M3A"]').dblclick()
    expect(page.locator("#declaration")).to_be_visible()
    assert_no_axe_violations(page, "declaration password form")
    page.fill("#declaration-password", "Wrong-0000")
    page.click("#declaration-submit")
    expect(page.locator("#unit-captcha-image")).to_have_attribute("src", ANY_SRC)
    assert_no_axe_violations(page, "declaration password form, captcha shown")
    page.fill("#declaration-password", account.declaration_password)
    page.fill("#unit-captcha-answer", CAPTCHA_ANSWER)
    page.click("#declaration-submit")
    page.locator("#done").wait_for(state="visible")
    assert_no_axe_violations(page, "logged in (done screen)")
    page.click("#lang")
    assert_no_axe_violations(page, "logged in (done screen), English")


def test_phone_simulator_states(gateway: ThreadedGateway, page: Page, make_person: Person) -> None:
    person = make_person()
    page.goto(gateway.base_url + "/demo/app")
    assert_no_axe_violations(page, "phone simulator, login")
    page.fill("#phone-identifier", make_person()["login_name"])  # another person: this one logs in below
    page.fill("#phone-password", "Wrong-pass9")
    page.click("#phone-login-submit")
    expect(page.locator("#phone-captcha-image")).to_have_attribute("src", ANY_SRC)
    assert_no_axe_violations(page, "phone simulator, login with captcha")

    phone_login(page, gateway, person)
    assert_no_axe_violations(page, "phone simulator, scan")
    page.fill("#qr-content", "https://phish.example/q/AAAAAAAAAAAAAAAAAAAAAA")
    page.click("#scan-submit")
    expect(page.locator("#scan-message")).not_to_be_empty()
    assert_no_axe_violations(page, "phone simulator, a foreign code refused")

    desktop = page.context.new_page()
    desktop.goto(gateway.base_url + "/")
    desktop.click("#tab-qr")
    wait_for_qr(desktop)
    page.locator("#picker li").first.wait_for()
    assert_no_axe_violations(page, "phone simulator, scan with the codes of this browser")
    desktop.close()

    minted = mint_elsewhere(gateway)
    page.fill("#qr-content", minted["qr_content"])
    page.click("#scan-submit")
    expect(page.locator("#proximity-warning")).to_be_visible()
    assert_no_axe_violations(page, "phone simulator, confirm with the other-network warning")
    page.click(".agent-details summary")
    assert_no_axe_violations(page, "phone simulator, confirm with the user agent's details open")
    page.click("#lang")
    assert_no_axe_violations(page, "phone simulator, confirm in English")
    page.click("#accept")
    expect(page.locator("#step-result")).to_be_visible()
    assert_no_axe_violations(page, "phone simulator, result")


def test_camera_landing_page(gateway: ThreadedGateway, page: Page) -> None:
    minted = httpx.post(f"{gateway.base_url}/v1/qr", json={"client_id": "withholding-desktop", "device_name": "pc"})
    page.goto(minted.json()["qr_content"])
    assert_no_axe_violations(page, "camera landing page /q/{qr_id}")


def test_sign_in_page_and_its_error_and_logout_pages(
    sso: ThreadedGateway,  # noqa: F811 (the fixture imported above)
    rp: RelyingPartySite,  # noqa: F811
    page: Page,
) -> None:
    page.goto(authorization(sso, rp).url)
    wait_for_qr(page)
    assert_no_axe_violations(page, "sign-in page, QR tab")
    page.click("#tab-password")
    assert_no_axe_violations(page, "sign-in page, password tab")
    page.goto(authorization(sso, rp, ui_locales="en").url)
    wait_for_qr(page)
    assert_no_axe_violations(page, "sign-in page in English")

    page.goto(sso.base_url + "/signin?request=unknown")
    expect(page.locator("h1")).to_contain_text("登录已失效")
    assert_no_axe_violations(page, "sign-in page, unknown or finished sign-in")
    page.goto(sso.base_url + "/authorize?client_id=nobody&response_type=code")
    expect(page.locator("h1")).to_contain_text("无法登录")
    assert_no_axe_violations(page, "provider error page (unknown client)")
    page.goto(sso.base_url + "/logout?state=" + "a" * (MAX_QUERY + 1))
    expect(page.locator("h1")).to_contain_text("无法退出")
    assert_no_axe_violations(page, "logout error page")
    page.goto(sso.base_url + "/logout")
    expect(page.locator("h1")).to_contain_text("已退出登录")
    assert_no_axe_violations(page, "logged-out page")

    # Signed in in this browser: a logout without a hint asks first.
    someone = sso_person(sso)
    page.goto(authorization(sso, rp).url)
    page.click("#tab-password")
    password_attempt(page, someone["phone"], someone["password"])
    page.wait_for_url(rp.callback + "?*")
    page.goto(sso.base_url + "/logout")
    expect(page.locator("form[action='/logout'] button")).to_be_visible()
    assert_no_axe_violations(page, "logout confirmation page")
    page.click("form[action='/logout'] button")
    expect(page.locator("h1")).to_contain_text("已退出登录")
