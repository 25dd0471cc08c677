"""The desktop login page as the notice describes it, in headless Chromium against a real gateway:
password login by default, the switch at the top right, the on-screen password keyboard (keyboard.js),
the links (立即注册, 忘记密码, 手机端下载), the hotline, the captcha at its own size, no login while
locked, and the desktop client's small window (800 x 560).

Screenshots of every state go to test-artifacts/screenshots/ (docs/img/ holds copies of some).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from PIL import Image

from tests.support.browser import screenshot
from tests.support.gateway_server import CAPTCHA_ANSWER, ThreadedGateway, free_port, make_settings
from tests.support.qr_decode import decode
from tests.test_protocols import assert_documented, assert_problem
from tests.test_web_pages import Person, claims_table, password_attempt, wait_for_qr

if TYPE_CHECKING:
    from playwright.sync_api import Page
with contextlib.suppress(ImportError):  # without Playwright the `browser` fixture skips (fails under CI=true)
    from playwright.sync_api import expect

APP_URL = "https://app.example.cn/iit/download?from=withholding-client"
HOTLINE = "12366-2"

LETTERS = "abcdefghijklmnopqrstuvwxyz"
SYMBOLS = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    """The login tests' gateway, without the units service: a login goes straight to the logged-in
    view. (With it, a person without units lands on "add a unit": tests/test_web_units.py.)"""
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path_factory.mktemp("login-page-plain"), port, units_mount=False), port)
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    """A gateway with the app download address and the hotline set."""
    port = free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("login-page"), port, app_download_url=APP_URL, hotline=HOTLINE, units_mount=False
    )
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


def page_of(char: str) -> str:
    if char.lower() in LETTERS:
        return "letters"
    return "digits" if char.isdigit() else "symbols"


def key(page: Page, char: str) -> str:
    """The selector of the on-screen key that types `char`."""
    return f".kb-keys button[data-key={json.dumps(char)}]"


def click_on_screen(page: Page, text: str) -> None:
    """Type `text` by clicking the on-screen keyboard's keys only (pages and shift as needed)."""
    for char in text:
        wanted = page_of(char)
        if page.get_attribute(".kb-keys", "data-page") != wanted:
            page.click(f'.kb-page[data-page="{wanted}"]')
        if char.isupper() and page.get_attribute('[data-action="shift"]', "aria-pressed") != "true":
            page.click('[data-action="shift"]')
        page.click(key(page, char))


def focused(page: Page, expression: str) -> str:
    value: str = page.evaluate(f"(() => {{ const e = document.activeElement; return String({expression}); }})()")
    return value


def tab_to(page: Page, test: str, limit: int = 120) -> None:
    """Press Tab (Shift+Tab after passing the login button) until the focused element passes `test`, a JS
    expression over `e` (document.activeElement)."""
    backwards = False
    for _ in range(limit):
        if focused(page, test) == "true":
            return
        if focused(page, "e.id") == "password-submit":
            backwards = True
        elif focused(page, "e.classList.contains('kb-toggle')") == "true":
            backwards = False
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
    raise AssertionError(f"no focusable element with {test} within {limit} key presses")


def type_by_tab_and_enter(page: Page, text: str) -> None:
    """Type `text` on the on-screen keyboard with the real keyboard's Tab and Enter only."""
    for char in text:
        wanted = page_of(char)
        if page.get_attribute(".kb-keys", "data-page") != wanted:
            tab_to(page, f"e.dataset.page === {json.dumps(wanted)}")
            page.keyboard.press("Enter")
        shifted = (
            page.get_attribute('[data-action="shift"]', "aria-pressed") == "true" if wanted == "letters" else False
        )
        if char.isupper() and not shifted:
            tab_to(page, "e.dataset.action === 'shift'")
            page.keyboard.press("Enter")
        tab_to(page, f"e.dataset.key === {json.dumps(char)}")
        page.keyboard.press("Enter")


# --- the default tab, the switch, the links -----------------------------------------------------------


def test_password_login_is_the_default_and_the_switch_is_at_the_top_right(gateway: ThreadedGateway, page: Page) -> None:
    page.goto(gateway.base_url + "/")
    expect(page.locator("#panel-password")).to_be_visible()
    expect(page.locator("#panel-qr")).to_be_hidden()
    expect(page.locator("#tab-password")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#identifier")).to_be_focused()
    card = page.locator("#login").bounding_box()
    switch = page.locator(".tabs").bounding_box()
    assert card is not None
    assert switch is not None
    assert switch["x"] + switch["width"] > card["x"] + card["width"] * 0.8  # at the right
    assert switch["y"] < card["y"] + 60  # at the top
    # The arrow keys move between the two tabs (one Tab stop, the ARIA tabs pattern).
    page.focus("#tab-password")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tab-qr")).to_be_focused()
    expect(page.locator("#panel-qr")).to_be_visible()
    wait_for_qr(page)
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#panel-password")).to_be_visible()


def test_the_links_go_where_they_should(configured: ThreadedGateway, page: Page) -> None:
    page.goto(configured.base_url + "/")
    expect(page.locator("#register-link")).to_have_text("立即注册")
    expect(page.locator("#forgot-link")).to_have_text("忘记密码")
    expect(page.locator("#hotline")).to_have_text(HOTLINE)
    expect(page.locator("#hotline")).to_have_attribute("href", f"tel:{HOTLINE}")
    expect(page.locator("#help")).to_have_text(f"如有疑问，请咨询主管税务机关或拨打纳税服务热线{HOTLINE}")
    page.click("#register-link")
    page.wait_for_url(f"{configured.base_url}/register")
    page.goto(configured.base_url + "/?lang=en")
    expect(page.locator("#forgot-link")).to_have_text("Forgot password")
    screenshot(page, "login-keyboard-english")
    page.click("#forgot-link")
    page.wait_for_url(f"{configured.base_url}/forgot-password")


def test_the_app_download_qr_decodes_to_the_setting(configured: ThreadedGateway, page: Page) -> None:
    page.goto(configured.base_url + "/")
    page.click("#tab-qr")
    wait_for_qr(page)
    expect(page.locator("#app-download")).to_be_hidden()
    page.click("#app-download-toggle")
    expect(page.locator("#app-download-toggle")).to_have_attribute("aria-expanded", "true")
    image = page.locator("#app-download-image")
    expect(image).to_be_visible()
    page.wait_for_function("document.getElementById('app-download-image').naturalWidth > 0")
    assert decode(Image.open(io.BytesIO(image.screenshot()))) == [APP_URL]
    screenshot(page, "login-app-download")
    page.click("#lang")
    expect(page.locator("#app-download-toggle")).to_have_text("Get the mobile app")
    screenshot(page, "login-app-download-english")
    page.click("#app-download-toggle")
    expect(page.locator("#app-download")).to_be_hidden()


def test_the_app_download_code_is_documented(
    configured: ThreadedGateway, tmp_path_factory: pytest.TempPathFactory
) -> None:
    answer = httpx.get(f"{configured.base_url}/app-download.svg")
    assert_documented(answer, "GET", "/app-download.svg")
    assert answer.headers["content-type"] == "image/svg+xml"
    assert answer.headers["x-content-type-options"] == "nosniff"
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("no-dl"), port, demo_app=False)
    server = ThreadedGateway(settings, port).start()
    try:
        assert_problem(
            httpx.get(f"{server.base_url}/app-download.svg"), 404, "not_found", operation=("GET", "/app-download.svg")
        )
        page_html = httpx.get(f"{server.base_url}/").text
        assert 'data-available="false"' in page_html  # the page hides 【手机端下载】
    finally:
        server.stop()


def test_without_a_download_address_in_production_there_is_no_download_link(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Empty QRGATE_APP_DOWNLOAD_URL: the phone simulator where it is served, else no address at all."""
    from gateway.settings import Settings

    demo = make_settings(tmp_path_factory.mktemp("dl"), 8000)
    assert demo.app_download_target == f"{demo.issuer}/demo/app"
    assert Settings(**{**demo.model_dump(), "demo_app": False}).app_download_target == ""
    with pytest.raises(ValueError, match="app_download_url"):
        Settings(**{**demo.model_dump(), "app_download_url": "javascript:alert(1)"})


# --- the on-screen keyboard ------------------------------------------------------------------------------


def test_login_by_clicking_the_on_screen_keyboard_only(
    gateway: ThreadedGateway, page: Page, make_person: Person
) -> None:
    person = make_person()
    assert re.search(r"[A-Z]", person["password"])
    assert re.search(r"[0-9]", person["password"])
    assert re.search(r"[^A-Za-z0-9]", person["password"])  # so the test crosses every page and shift
    page.goto(gateway.base_url + "/")
    expect(page.locator(".keyboard")).to_be_visible()  # shown by default
    screenshot(page, "login-keyboard")
    page.fill("#identifier", person["login_name"])
    click_on_screen(page, person["password"])
    assert page.input_value("#password") == person["password"]
    expect(page.locator("#password")).to_be_focused()  # the field typed into
    page.click("#password-submit")
    page.locator("#done").wait_for(state="visible")
    assert claims_table(page)["sub"] == person["id"]


def test_login_by_the_keyboard_alone(gateway: ThreadedGateway, page: Page, make_person: Person) -> None:
    """Tab to every control, Enter to press it: the account typed, the password on the on-screen keys."""
    person = make_person()
    page.goto(gateway.base_url + "/")
    expect(page.locator("#identifier")).to_be_focused()
    page.keyboard.type(person["phone"])
    page.keyboard.press("Tab")
    expect(page.locator("#password")).to_be_focused()
    type_by_tab_and_enter(page, person["password"])
    assert page.input_value("#password") == person["password"]
    tab_to(page, "e.id === 'password-submit'")
    page.keyboard.press("Enter")
    page.locator("#done").wait_for(state="visible")
    assert claims_table(page)["sub"] == person["id"]


def test_the_keyboard_closes_reopens_and_reshuffles(gateway: ThreadedGateway, page: Page) -> None:
    page.goto(gateway.base_url + "/")
    first = page.eval_on_selector_all(".kb-keys [data-key]", "keys => keys.map(k => k.dataset.key).join('')")
    assert sorted(first) == sorted(LETTERS)
    # Every key is a button a screen reader names.
    labels = page.eval_on_selector_all(".kb-keys [data-key]", "keys => keys.map(k => k.getAttribute('aria-label'))")
    assert sorted(labels) == sorted(f"小写 {c}" for c in LETTERS)
    page.click('[data-action="shift"]')
    expect(page.locator('[data-action="shift"]')).to_have_attribute("aria-pressed", "true")
    expect(page.locator(key(page, "Q"))).to_have_attribute("aria-label", "大写 Q")
    page.click('.kb-page[data-page="symbols"]')
    symbols = page.eval_on_selector_all(".kb-keys [data-key]", "keys => keys.map(k => k.dataset.key).join('')")
    assert sorted(symbols) == sorted(SYMBOLS)
    expect(page.locator(key(page, "!"))).to_have_attribute("aria-label", "感叹号")
    page.click('.kb-page[data-page="digits"]')
    page.click(key(page, "7"))
    page.click(key(page, "3"))
    page.click('[data-action="backspace"]')
    assert page.input_value("#password") == "7"

    page.click(".kb-close")  # 【关闭】
    expect(page.locator(".keyboard")).to_be_hidden()
    expect(page.locator(".kb-toggle")).to_have_attribute("aria-expanded", "false")
    expect(page.locator("#password")).to_be_focused()
    page.keyboard.type("x!Y")  # the real keyboard works with it closed
    assert page.input_value("#password") == "7x!Y"
    screenshot(page, "login-keyboard-closed")
    page.click(".kb-toggle")  # the icon opens it again, its keys in a new order
    expect(page.locator(".keyboard")).to_be_visible()
    again = page.eval_on_selector_all(".kb-keys [data-key]", "keys => keys.map(k => k.dataset.key).join('')")
    assert sorted(again) == sorted(LETTERS)
    assert again != first  # the same order twice: 1 in 26! by chance
    page.focus(key(page, "a"))
    page.keyboard.press("Escape")  # Escape closes it too, back to the field
    expect(page.locator(".keyboard")).to_be_hidden()
    expect(page.locator("#password")).to_be_focused()
    page.click(".kb-toggle")
    expect(page.locator(".keyboard")).to_be_visible()
    page.click(".kb-toggle")  # and the icon closes it
    expect(page.locator(".keyboard")).to_be_hidden()
    page.click("#lang")
    expect(page.locator(".kb-toggle")).to_have_attribute("aria-label", "Open the on-screen keyboard")


# --- captcha, lock ---------------------------------------------------------------------------------------


def test_the_captcha_is_shown_at_its_own_size_and_can_be_refreshed(
    gateway: ThreadedGateway, page: Page, make_person: Person
) -> None:
    person = make_person()
    page.goto(gateway.base_url + "/")
    password_attempt(page, person["login_name"], "Wrong-pass9")
    image = page.locator("#captcha-image")
    expect(image).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    page.wait_for_function("document.getElementById('captcha-image').naturalWidth > 0")
    natural = page.evaluate(
        "(() => { const i = document.getElementById('captcha-image'); return [i.naturalWidth, i.naturalHeight]; })()"
    )
    shown = image.bounding_box()
    assert shown is not None
    assert (round(shown["width"]), round(shown["height"])) == tuple(natural)  # no downscaling
    first = image.get_attribute("src")
    expect(page.locator("#captcha-refresh")).to_have_text("换一张")
    page.click("#captcha-refresh")
    expect(image).not_to_have_attribute("src", first or "")
    password_attempt(page, person["login_name"], person["password"], CAPTCHA_ANSWER)
    page.locator("#done").wait_for(state="visible")


def test_no_login_button_while_the_account_is_locked(gateway: ThreadedGateway, page: Page, make_person: Person) -> None:
    person = make_person()
    page.goto(gateway.base_url + "/?lang=en")
    password_attempt(page, person["phone"], "Wrong-pass9")
    expect(page.locator("#password-message")).to_have_text("Wrong account or password; 4 attempts left")
    for left in ("3 attempts", "2 attempts", "1 attempt"):  # "1 attempt", not "1 attempts"
        expect(page.locator("#captcha-image")).to_have_attribute("src", re.compile("."))
        password_attempt(page, person["phone"], "Wrong-pass9", CAPTCHA_ANSWER)
        expect(page.locator("#password-message")).to_have_text(f"Wrong account or password; {left} left")
    password_attempt(page, person["phone"], "Wrong-pass9", CAPTCHA_ANSWER)
    expect(page.locator("#password-message")).to_have_text(
        re.compile(
            r"^The account is locked; try again in 1(19 min \d{1,2}|20 min 0) s, or unlock it with “Forgot password”$"
        )
    )
    expect(page.locator("#password-submit")).to_be_disabled()
    screenshot(page, "login-locked-english")
    page.click("#lang")
    expect(page.locator("#password-message")).to_have_text(re.compile(r"^账号已锁定，请在1(19分\d{1,2}|20分0)秒后重试"))
    expect(page.locator("#password-submit")).to_be_disabled()
    screenshot(page, "login-locked")
    page.fill("#identifier", "someone_else")  # the lock is that account's
    expect(page.locator("#password-submit")).to_be_enabled()


# --- wording -------------------------------------------------------------------------------------------


def test_english_has_no_full_width_punctuation_and_chinese_no_stray_spaces(
    gateway: ThreadedGateway, page: Page
) -> None:
    texts: dict[str, str] = {}
    for lang in ("zh", "en"):
        page.goto(f"{gateway.base_url}/?lang={lang}")
        texts[lang] = page.locator("body").inner_text()
        page.click("#tab-qr")
        wait_for_qr(page)
        texts[lang] += page.locator("body").inner_text()
    assert not re.search(r"[\u3000-\u303f\uff01-\uff5e]", texts["en"]), "full-width punctuation in English"
    assert not re.search(r"[\u4e00-\u9fff] \d|\d [\u4e00-\u9fff]", texts["zh"]), "a space between Chinese and a number"
    assert "右侧" not in texts["zh"]
    assert "on the right" not in texts["en"]
    # English is drawn in a Latin font: its quotes are narrow, not the CJK font's full-width ones.
    page.goto(f"{gateway.base_url}/?lang=en")
    width = page.evaluate(
        """(() => {
            const s = document.createElement('span');
            s.textContent = '“';
            document.body.append(s);
            const w = s.getBoundingClientRect().width / parseFloat(getComputedStyle(s).fontSize);
            s.remove();
            return w;
        })()"""
    )
    assert width < 0.6


# --- the desktop client's small window ---------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_layout_holds_at_800_by_560(gateway: ThreadedGateway, page: Page, lang: str) -> None:
    page.set_viewport_size({"width": 800, "height": 560})
    page.goto(f"{gateway.base_url}/?lang={lang}")
    expect(page.locator(".keyboard")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 800  # nothing sideways
    submit = page.locator("#password-submit").bounding_box()
    assert submit is not None
    assert submit["y"] + submit["height"] <= 560, "the login button is below the fold"
    screenshot(page, f"login-800x560-{lang}")
    page.click("#tab-qr")
    wait_for_qr(page)
    qr = page.locator("#qr-image").bounding_box()
    switch = page.locator("#tab-password").bounding_box()
    assert qr is not None
    assert switch is not None
    assert qr["y"] + qr["height"] <= 560, "the QR code is below the fold"
    assert switch["y"] >= 0
    screenshot(page, f"login-qr-800x560-{lang}")
