"""The desktop login page and the phone simulator in headless Chromium, against a real gateway.

The phone's side is played through the API (or by the phone page itself); each test ends with no
console error (a CSP violation would be one). Screenshots of every state go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx
import pytest
from PIL import Image

from gateway.web import demo
from gateway.web.demo import DemoAccount
from tests.conftest import new_identity
from tests.support.browser import screenshot
from tests.support.gateway_server import CAPTCHA_ANSWER, ThreadedGateway, free_port, make_settings
from tests.support.qr_decode import decode

if TYPE_CHECKING:
    from playwright.sync_api import Page
with contextlib.suppress(ImportError):  # without Playwright the `browser` fixture skips (fails under CI=true)
    from playwright.sync_api import expect


Person = Callable[..., dict[str, str]]
ANY = re.compile(".+")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    """The login tests' gateway, without the units service: a login goes straight to the logged-in
    view. (With it, a person without units lands on "add a unit": tests/test_web_units.py.)"""
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("login-web"), port, units_mount=False)
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    """QR codes that expire after 5 s."""
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("quick-web"), port, qr_ttl=5, units_mount=False)
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


class Phone:
    """The mobile app's side, through the API."""

    def __init__(self, gateway: ThreadedGateway, person: dict[str, str]) -> None:
        self.http = httpx.Client(base_url=gateway.base_url, timeout=10)
        body = {"identifier": person["phone"], "password": person["password"], "client_id": "mobile-app"}
        answer = self.http.post("/v1/login/password", json=body)
        assert answer.status_code == 200, answer.text
        self.headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def scan(self, qr_id: str) -> httpx.Response:
        return self.http.post(f"/v1/qr/{qr_id}/scan", headers=self.headers)

    def confirm(self, qr_id: str) -> httpx.Response:
        return self.http.post(f"/v1/qr/{qr_id}/confirm", headers=self.headers)

    def cancel(self, qr_id: str) -> httpx.Response:
        return self.http.post(f"/v1/qr/{qr_id}/cancel", headers=self.headers)


PhoneFor = Callable[[ThreadedGateway, dict[str, str]], Phone]


@pytest.fixture
def phone_for() -> Iterator[PhoneFor]:
    """Phone(gateway, person), closed after the test."""
    made: list[Phone] = []

    def make(gateway: ThreadedGateway, person: dict[str, str]) -> Phone:
        made.append(Phone(gateway, person))
        return made[-1]

    yield make
    for phone in made:
        phone.http.close()


def shown_qr_id(page: Page) -> str:
    """The qr_id of the code the page shows (from its image URL: /v1/qr/{qr_id}.svg?size=...)."""
    expect(page.locator("#qr-image")).to_have_attribute("src", ANY)
    src = page.get_attribute("#qr-image", "src") or ""
    return src.removeprefix("/v1/qr/").split(".", 1)[0]


def wait_for_qr(page: Page, previous: str | None = None, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        src = page.get_attribute("#qr-image", "src") or ""
        qr_id = src.removeprefix("/v1/qr/").split(".", 1)[0]
        if qr_id and qr_id != previous and page.evaluate("document.getElementById('qr-image').naturalWidth") > 0:
            return qr_id
        time.sleep(0.05)
    raise AssertionError("the page shows no (new) QR code")


def decode_shown_qr(page: Page) -> str:
    """What a camera reads off the QR code on the screen."""
    found = decode(Image.open(io.BytesIO(page.locator("#qr-image").screenshot())))
    assert len(found) == 1, "the QR code on the screen does not decode"
    return found[0]


def claims_table(page: Page, table: str = "#claims") -> dict[str, str]:
    """The raw claims, behind the entered screen's "details" toggle (opened here)."""
    page.evaluate("document.getElementById('token-details').open = true")
    rows = page.locator(f"{table} tr")
    return {rows.nth(i).locator("th").inner_text(): rows.nth(i).locator("td").inner_text() for i in range(rows.count())}


def assert_nothing_stored(page: Page) -> None:
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.context.cookies() == []


# --- QR login ---------------------------------------------------------------------------------------


def test_qr_login_over_websocket(
    gateway: ThreadedGateway, page: Page, make_person: Person, phone_for: PhoneFor
) -> None:
    person = make_person()
    phone = phone_for(gateway, person)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(gateway.base_url + "/")
    page.click("#tab-qr")  # the page opens on the password tab
    qr_id = wait_for_qr(page)
    assert decode_shown_qr(page) == f"{gateway.base_url}/q/{qr_id}"
    expect(page.locator("#qr-status")).to_have_text("等待扫码")
    expect(page.locator("#qr-countdown")).to_contain_text("秒后过期")
    screenshot(page, "desktop-qr")

    assert phone.scan(qr_id).status_code == 200
    expect(page.locator("#qr-status")).to_have_text("已由张*扫描，请在手机上确认")
    screenshot(page, "desktop-scanned")

    assert phone.confirm(qr_id).status_code == 204
    started = time.monotonic()
    page.locator("#done").wait_for(state="visible", timeout=1000)
    assert time.monotonic() - started < 1.0
    claims = claims_table(page)
    assert claims["sub"] == person["id"]
    assert claims["amr"] == '["qr"]'
    assert claims["client_id"] == "withholding-desktop"
    expect(page.locator("#done-summary")).to_have_text("通过扫码登录。")
    screenshot(page, "desktop-logged-in")
    assert sockets == [f"{gateway.ws_url}/v1/qr/{qr_id}/events"]
    assert qr_id not in page.url
    assert "token" not in page.url
    assert_nothing_stored(page)


def test_long_poll_on_request(gateway: ThreadedGateway, page: Page, make_person: Person, phone_for: PhoneFor) -> None:
    phone = phone_for(gateway, make_person())
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(gateway.base_url + "/?transport=poll")
    page.click("#tab-qr")  # the page opens on the password tab
    qr_id = wait_for_qr(page)
    expect(page.locator("#qr-status")).to_have_text("等待扫码（轮询模式）")
    phone.scan(qr_id)
    expect(page.locator("#qr-status")).to_contain_text("张*")
    phone.confirm(qr_id)
    page.locator("#done").wait_for(state="visible", timeout=1000)
    assert sockets == []


def test_falls_back_to_long_poll_when_the_socket_cannot_open(
    gateway: ThreadedGateway, page: Page, make_person: Person, phone_for: PhoneFor
) -> None:
    # What a proxy that refuses WebSocket upgrades looks like to the page: the socket closes unopened.
    page.add_init_script(
        "window.WebSocket = class { constructor() { setTimeout(() => this.onclose?.({ code: 1006 }), 20); }"
        " send() {} close() {} };"
    )
    phone = phone_for(gateway, make_person())
    page.goto(gateway.base_url + "/")
    page.click("#tab-qr")  # the page opens on the password tab
    qr_id = wait_for_qr(page)
    expect(page.locator("#qr-status")).to_have_text("等待扫码（轮询模式）")
    phone.scan(qr_id)
    phone.confirm(qr_id)
    page.locator("#done").wait_for(state="visible", timeout=1000)
    assert claims_table(page)["amr"] == '["qr"]'


def test_cancelled_on_the_phone_then_refreshed(
    gateway: ThreadedGateway, page: Page, make_person: Person, phone_for: PhoneFor
) -> None:
    phone = phone_for(gateway, make_person())
    page.goto(gateway.base_url + "/")
    page.click("#tab-qr")  # the page opens on the password tab
    qr_id = wait_for_qr(page)
    phone.scan(qr_id)
    expect(page.locator("#qr-status")).to_contain_text("张*")
    phone.cancel(qr_id)
    expect(page.locator("#qr-status")).to_have_text("已在手机上取消登录")
    expect(page.locator("#qr-refresh")).to_be_visible()
    screenshot(page, "desktop-cancelled")
    page.click("#qr-refresh")
    assert wait_for_qr(page, previous=qr_id) != qr_id


def test_an_expired_code_is_refreshed(quick: ThreadedGateway, page: Page, phone_for: PhoneFor) -> None:
    person = new_identity()
    quick.add_person(**person)
    page.goto(quick.base_url + "/")
    page.click("#tab-qr")  # the page opens on the password tab
    first = wait_for_qr(page)
    page.locator('#qr-status[data-state="qr_expired"]').wait_for(timeout=8000)
    screenshot(page, "desktop-expired")
    second = wait_for_qr(page, previous=first)
    assert httpx.get(f"{quick.base_url}/v1/qr/{first}.svg").status_code == 404
    phone = phone_for(quick, person)
    assert phone.scan(second).status_code == 200
    phone.confirm(second)
    page.locator("#done").wait_for(state="visible", timeout=1000)


def test_switching_tabs_abandons_the_code(gateway: ThreadedGateway, page: Page) -> None:
    page.goto(gateway.base_url + "/")
    page.click("#tab-qr")  # the page opens on the password tab
    qr_id = wait_for_qr(page)
    page.click("#tab-password")
    expect(page.locator("#panel-password")).to_be_visible()
    deadline = time.monotonic() + 3
    while httpx.get(f"{gateway.base_url}/v1/qr/{qr_id}.svg").status_code != 404:
        assert time.monotonic() < deadline, "the abandoned code is still pending"
        time.sleep(0.05)
    page.click("#tab-qr")
    assert wait_for_qr(page, previous=qr_id) != qr_id


# --- Password login ---------------------------------------------------------------------------------


def password_attempt(page: Page, identifier: str, password: str, captcha: str | None = None) -> None:
    page.fill("#identifier", identifier)
    page.fill("#password", password)
    if captcha is not None:
        page.fill("#captcha-answer", captcha)
    page.click("#password-submit")


def test_password_login_asks_for_a_captcha_after_a_wrong_password(
    gateway: ThreadedGateway, page: Page, make_person: Person
) -> None:
    person = make_person()
    page.goto(gateway.base_url + "/")
    expect(page.locator("#panel-password")).to_be_visible()  # the default tab
    expect(page.locator("#captcha-row")).to_be_hidden()
    password_attempt(page, person["login_name"], "Wrong-pass9")
    expect(page.locator("#password-message")).to_have_text("账号或密码错误，还可尝试4次")
    expect(page.locator("#captcha-row")).to_be_visible()
    expect(page.locator("#captcha-image")).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    screenshot(page, "desktop-captcha")

    password_attempt(page, person["login_name"], person["password"], "WRNG")
    expect(page.locator("#password-message")).to_have_text("验证码错误或已过期，请重新输入")
    password_attempt(page, person["login_name"], person["password"], CAPTCHA_ANSWER)
    page.locator("#done").wait_for(state="visible")
    claims = claims_table(page)
    assert claims["amr"] == '["pwd"]'
    assert claims["sub"] == person["id"]
    expect(page.locator("#done-summary")).to_have_text("通过账号密码登录。")
    assert_nothing_stored(page)


def test_the_fifth_wrong_password_shows_the_lock_and_the_time_left(
    gateway: ThreadedGateway, page: Page, make_person: Person
) -> None:
    person = make_person()
    page.goto(gateway.base_url + "/")
    page.click("#tab-password")
    password_attempt(page, person["phone"], "Wrong-pass9")
    for left in (3, 2, 1):
        expect(page.locator("#captcha-image")).to_have_attribute("src", ANY)
        password_attempt(page, person["phone"], "Wrong-pass9", CAPTCHA_ANSWER)
        expect(page.locator("#password-message")).to_have_text(f"账号或密码错误，还可尝试{left}次")
    password_attempt(page, person["phone"], "Wrong-pass9", CAPTCHA_ANSWER)
    expect(page.locator("#password-message")).to_have_text(
        re.compile(r"^账号已锁定，请在119分\d{1,2}秒后重试，或通过【忘记密码】解锁$")
    )
    expect(page.locator("#password-submit")).to_be_disabled()  # no login while the account is locked
    screenshot(page, "desktop-locked")


def test_english(gateway: ThreadedGateway, page: Page) -> None:
    page.goto(gateway.base_url + "/")
    page.click("#tab-qr")  # the page opens on the password tab
    wait_for_qr(page)
    page.click("#lang")
    expect(page.locator("#tab-qr")).to_have_text("QR code")
    expect(page.locator("#qr-status")).to_have_text("Waiting for a scan")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert page.url.endswith("?lang=en")
    screenshot(page, "desktop-english")
    page.click("#lang")
    expect(page.locator("#tab-qr")).to_have_text("扫码登录")


# --- The phone simulator -----------------------------------------------------------------------------


def mint_elsewhere(gateway: ThreadedGateway) -> dict[str, str]:
    """A desktop on another network (its address comes through the trusted proxy, 127.0.0.1)."""
    answer = httpx.post(
        f"{gateway.base_url}/v1/qr",
        json={"client_id": "withholding-desktop", "device_name": "财务室电脑"},
        headers={"X-Forwarded-For": "203.0.113.9", "User-Agent": "WithholdingClient/3.1 (Windows 10)"},
    )
    assert answer.status_code == 201, answer.text
    minted: dict[str, str] = answer.json()
    return minted


def phone_login(page: Page, gateway: ThreadedGateway, person: dict[str, str]) -> None:
    page.goto(gateway.base_url + "/demo/app")
    page.fill("#phone-identifier", person["login_name"])
    page.fill("#phone-password", person["password"])
    page.click("#phone-login-submit")
    expect(page.locator("#step-scan")).to_be_visible()
    # The person's masked real name, not the login name typed.
    expect(page.locator("#signed-in")).to_have_text(f"已登录：{person['name'][0]}*")


def test_phone_page_shows_the_context_and_confirms(gateway: ThreadedGateway, page: Page, make_person: Person) -> None:
    person = make_person()
    minted = mint_elsewhere(gateway)
    phone_login(page, gateway, person)
    page.fill("#qr-content", minted["qr_content"])
    page.click("#scan-submit")
    expect(page.locator("#step-confirm")).to_be_visible()
    expect(page.locator("#ctx-device")).to_have_text("财务室电脑")
    expect(page.locator("#ctx-ip")).to_have_text("203.0.113.9")
    expect(page.locator("#ctx-client")).to_have_text("扣缴客户端")  # the client's name, not its id
    expect(page.locator("#ctx-agent")).to_have_text("WithholdingClient 3.1 · Windows")  # in words
    expect(page.locator("#ctx-agent-raw")).to_be_hidden()  # the raw user agent only behind "details"
    expect(page.locator("#ctx-network")).to_have_text("与手机不在同一网络")
    expect(page.locator("#proximity-warning")).to_be_visible()
    expect(page.locator("#decline")).to_be_focused()
    accept, decline = page.locator("#accept").bounding_box(), page.locator("#decline").bounding_box()
    assert accept is not None
    assert decline is not None
    assert accept["width"] == pytest.approx(decline["width"], abs=0.5)  # as prominent as "accept"
    assert accept["height"] == pytest.approx(decline["height"], abs=0.5)
    screenshot(page, "phone-confirm")
    page.click(".agent-details summary")
    expect(page.locator("#ctx-agent-raw")).to_have_text("WithholdingClient/3.1 (Windows 10)")

    waiter = {"Authorization": f"Bearer {minted['waiter_token']}"}
    state = httpx.get(f"{gateway.base_url}/v1/qr/{minted['qr_id']}/state", headers=waiter).json()
    assert state["state"] == "scanned"
    page.click("#accept")
    expect(page.locator("#result-title")).to_have_text("已确认登录")
    screenshot(page, "phone-confirmed")
    state = httpx.get(f"{gateway.base_url}/v1/qr/{minted['qr_id']}/state", headers=waiter).json()
    assert state["state"] == "confirmed"
    assert set(state["token"]) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert_nothing_stored(page)


def test_phone_page_declines(gateway: ThreadedGateway, page: Page, make_person: Person) -> None:
    minted = mint_elsewhere(gateway)
    phone_login(page, gateway, make_person())
    page.fill("#qr-content", minted["qr_content"])
    page.click("#scan-submit")
    page.click("#decline")
    expect(page.locator("#result-title")).to_have_text("已拒绝")
    waiter = {"Authorization": f"Bearer {minted['waiter_token']}"}
    state = httpx.get(f"{gateway.base_url}/v1/qr/{minted['qr_id']}/state", headers=waiter).json()
    assert state["state"] == "cancelled"


def test_phone_page_refuses_codes_of_other_sites(gateway: ThreadedGateway, page: Page, make_person: Person) -> None:
    phone_login(page, gateway, make_person())
    calls: list[str] = []
    page.on("request", lambda request: calls.append(request.url))
    page.fill("#qr-content", "https://phish.example/q/AAAAAAAAAAAAAAAAAAAAAA")
    page.click("#scan-submit")
    expect(page.locator("#scan-message")).to_have_text("这不是本系统的登录二维码，请勿继续。")
    assert calls == []


def test_the_whole_journey_in_one_browser(gateway: ThreadedGateway, page: Page, make_person: Person) -> None:
    """The demo: the desktop page shows a code, the phone page (another tab) picks it, scans, confirms."""
    person = make_person()
    page.goto(gateway.base_url + "/")
    page.click("#tab-qr")  # the page opens on the password tab
    qr_id = wait_for_qr(page)
    phone = page.context.new_page()
    phone_login(phone, gateway, person)
    phone.locator("#picker li").first.wait_for()
    assert phone.locator("#picker code").first.inner_text() == f"{gateway.base_url}/q/{qr_id}"
    screenshot(phone, "phone-scan")
    phone.locator("#picker button").first.click()
    expect(phone.locator("#ctx-network")).to_have_text("与手机在同一网络")
    expect(phone.locator("#ctx-agent")).to_have_text("Chrome 浏览器 · Linux")  # this headless Chromium, in words
    expect(phone.locator("#proximity-warning")).to_be_hidden()
    expect(page.locator("#qr-status")).to_contain_text("张*")
    phone.click("#accept")
    page.locator("#done").wait_for(state="visible", timeout=1000)
    assert claims_table(page)["sub"] == person["id"]


# --- Units after the login -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadedGateway, DemoAccount]]:
    """A gateway seeded like `qrgate serve --demo`: the demo person and two units."""
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("demo-web"), port)
    with ThreadPoolExecutor(1) as pool:
        account = pool.submit(asyncio.run, demo.seed(settings)).result()
    server = ThreadedGateway(settings, port).start()
    yield server, account
    server.stop()


def test_units_after_a_qr_login(
    demo_gateway: tuple[ThreadedGateway, DemoAccount], page: Page, phone_for: PhoneFor
) -> None:
    gateway, account = demo_gateway
    phone = phone_for(gateway, {"phone": account.phone, "password": account.password})
    page.goto(gateway.base_url + "/")
    page.click("#tab-qr")  # the page opens on the password tab
    qr_id = wait_for_qr(page)
    phone.scan(qr_id)
    phone.confirm(qr_id)
    page.locator("#units").wait_for(state="visible")
    expect(page.locator("#unit-list li")).to_have_count(2)
    expect(page.locator("#unit-list li").nth(0)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#unit-list")).to_be_focused()
    screenshot(page, "desktop-units")

    target = page.locator('#unit-list li[data-tin="91310115MA1K4D2M3A"]')
    page.keyboard.press("ArrowDown")  # select with the arrow keys, then press Enter
    if target.get_attribute("data-index") == "0":
        page.keyboard.press("ArrowUp")
    expect(target).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Enter")
    expect(page.locator("#declaration")).to_be_visible()
    expect(page.locator("#unit-chosen")).to_have_text("单位：演示商贸有限公司（91310115MA1K4D2M3A）")
    page.fill("#declaration-password", "Wrong-0000")
    page.click("#declaration-submit")
    expect(page.locator("#declaration-message")).to_have_text("申报密码错误，还可尝试4次")
    expect(page.locator("#unit-captcha-image")).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    screenshot(page, "desktop-declaration-password")
    page.fill("#declaration-password", account.declaration_password)
    page.fill("#unit-captcha-answer", CAPTCHA_ANSWER)
    page.click("#declaration-submit")
    page.locator("#done").wait_for(state="visible")
    unit = claims_table(page, "#unit-claims")
    assert json.loads(unit["unit"]) == {"tin": "91310115MA1K4D2M3A", "role": "tax_staff", "via": "declaration_password"}
    assert unit["sub"] == claims_table(page)["sub"]
    screenshot(page, "desktop-logged-in-unit")


def test_an_authorized_unit_is_entered_without_a_password(
    demo_gateway: tuple[ThreadedGateway, DemoAccount], page: Page
) -> None:
    gateway, account = demo_gateway
    page.goto(gateway.base_url + "/")
    page.click("#tab-password")
    password_attempt(page, account.login_name, account.password)
    page.locator('#unit-list li[data-tin="91110108MA01ABCD1E"]').dblclick()
    page.locator("#done").wait_for(state="visible")
    unit = claims_table(page, "#unit-claims")
    assert json.loads(unit["unit"]) == {"tin": "91110108MA01ABCD1E", "role": "tax_staff", "via": "authorization"}
    expect(page.locator("#fact-name")).to_have_text("演示科技有限公司")
    expect(page.locator("#fact-via")).to_have_text("授权")
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#panel-password")).to_be_visible()
