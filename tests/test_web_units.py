"""The desktop page's unit screens in headless Chromium, against a real gateway with the units service
mounted: the empty list → "add a unit" (the first unit link) → the entered screen; one unit → straight
to its declaration password; several → select, then 【进入】; 【忘记申报密码】 with the WEB link and its
QR code; the entered screen in words in both languages. Screenshots go to test-artifacts/ and, for the
docs, docs/img/. axe-core (WCAG 2.1 AA) is run on each screen (tests/support/axe.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from gateway.settings import Settings
from gateway.units.admin import assign_role, create_unit
from gateway.units.declaration import reset_declaration_password
from gateway.units.rules import UnitRole
from gateway.units.service import UnitsService
from tests.conftest import new_identity
from tests.support.axe import assert_no_axe_violations
from tests.support.browser import screenshot
from tests.support.gateway_server import CAPTCHA_ANSWER, ThreadedGateway, free_port, make_settings
from tests.support.qr_decode import decode
from tests.support.units import DECLARATION_PASSWORD, new_tin

if TYPE_CHECKING:
    from playwright.sync_api import Page
with contextlib.suppress(ImportError):
    from playwright.sync_api import expect

HELP_URL = "https://etax.example.test/reset-declaration-password"
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("units-web"), port, declaration_password_help_url=HELP_URL)
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


async def _seed(settings: Settings, person_id: str, units: list[tuple[str, str, str]]) -> None:
    service = UnitsService.create(settings)
    await service.start()
    try:
        for tin, name, role in units:
            await create_unit(service, tin=tin, name=name, declaration_password=None, actor="test")
            await reset_declaration_password(service, tin, DECLARATION_PASSWORD, actor="test", how="test")
            if role:
                await assign_role(service, tin, person_id, UnitRole(role), actor="test")
    finally:
        await service.close()


def seed(site: ThreadedGateway, person_id: str, *units: tuple[str, str, str]) -> None:
    """Units with the declaration password DECLARATION_PASSWORD; a role for the person where one is named."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _seed(site.settings, person_id, list(units))).result()


def new_person(site: ThreadedGateway, name: str = "王小明") -> dict[str, str]:
    identity = {**new_identity(), "name": name}
    identity["id"] = site.add_person(**{k: v for k, v in identity.items() if k != "id"})
    return identity


def log_in(page: Page, site: ThreadedGateway, person: dict[str, str], lang: str = "") -> None:
    page.goto(site.base_url + "/" + (f"?lang={lang}" if lang else ""))
    page.click("#tab-password")
    page.fill("#identifier", person["login_name"])
    page.fill("#password", person["password"])
    page.click("#password-submit")
    page.locator("#units").wait_for(state="visible")


def shoot(page: Page, name: str) -> None:
    """A screenshot in test-artifacts/, copied into docs/img/ for docs/units.md."""
    path = screenshot(page, name)
    DOCS_IMG.mkdir(exist_ok=True)
    shutil.copyfile(path, DOCS_IMG / f"{name}.png")


def test_empty_list_then_add_a_unit_then_the_entered_screen(site: ThreadedGateway, page: Page) -> None:
    person = new_person(site)
    tin = new_tin()
    seed(site, person["id"], (tin, "关联测试有限公司", ""))  # the unit exists; the person has no role in it
    log_in(page, site, person)
    # No unit yet: the page opens at "add a unit", says who is logged in, and offers log out.
    expect(page.locator("#unit-link")).to_be_visible()
    expect(page.locator("#units-message")).to_contain_text("您还没有可办税的单位")
    expect(page.locator("#units-who")).to_have_text("当前登录：王**")
    expect(page.locator("#unit-list")).to_be_hidden()
    expect(page.locator("#units-logout")).to_be_visible()
    expect(page.locator("#link-tin")).to_be_focused()
    assert_no_axe_violations(page, "add a unit")
    shoot(page, "units-add-zh")

    # Bad input is said at once, nothing is sent and nothing typed is lost.
    for bad in ("91110000", "𠮷" * 9, "9111000060003734 L"):
        page.fill("#link-tin", bad)
        page.fill("#link-password", "Wrong-000")
        page.click("#link-submit")
        expect(page.locator("#link-message")).to_have_text("纳税人识别号应为18位统一社会信用代码（数字和大写字母）")
        expect(page.locator("#link-tin")).to_have_value(bad)
        expect(page.locator("#link-password")).to_have_value("Wrong-000")
        expect(page.locator("#link-tin")).to_be_focused()
    page.fill("#link-tin", tin)
    page.fill("#link-password", "")
    page.click("#link-submit")
    expect(page.locator("#link-message")).to_have_text("请输入申报密码")
    expect(page.locator("#link-password")).to_be_focused()
    expect(page.locator("#link-captcha-row")).to_be_hidden()  # nothing was counted
    # A wrong pair for the real unit, then an unknown TIN: the same words, and a captcha from then on.
    page.fill("#link-tin", tin.lower())
    page.fill("#link-password", "Wrong-000")
    page.click("#link-submit")
    expect(page.locator("#link-message")).to_have_text("纳税人识别号或申报密码错误，还可尝试4次")
    expect(page.locator("#link-captcha-image")).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    page.fill("#link-tin", new_tin())
    page.fill("#link-password", "Wrong-000")
    page.fill("#link-captcha-answer", CAPTCHA_ANSWER)
    page.click("#link-submit")
    expect(page.locator("#link-message")).to_have_text("纳税人识别号或申报密码错误，还可尝试4次")
    assert_no_axe_violations(page, "add a unit, refused")
    shoot(page, "units-add-wrong-zh")

    page.fill("#link-tin", tin)
    page.fill("#link-password", DECLARATION_PASSWORD)
    page.fill("#link-captcha-answer", CAPTCHA_ANSWER)
    page.click("#link-submit")
    page.locator("#done").wait_for(state="visible")
    expect(page.locator("#done-heading")).to_have_text("已进入单位")
    expect(page.locator("#fact-name")).to_have_text("关联测试有限公司")
    expect(page.locator("#fact-tin")).to_have_text(tin)
    expect(page.locator("#fact-person")).to_have_text("王**")
    expect(page.locator("#fact-role")).to_have_text("办税人员")
    expect(page.locator("#fact-via")).to_have_text("申报密码")
    # The unit is the person's now: switching shows it in the list.
    page.click("#switch-unit")
    expect(page.locator("#declaration")).to_be_visible()  # one unit: straight to its declaration password
    expect(page.locator("#unit-chosen")).to_contain_text("关联测试有限公司")


def test_one_unit_goes_straight_to_its_declaration_password(site: ThreadedGateway, page: Page) -> None:
    person = new_person(site)
    tin = new_tin()
    seed(site, person["id"], (tin, "独家单位有限公司", "tax_staff"))
    log_in(page, site, person)
    expect(page.locator("#declaration")).to_be_visible()
    expect(page.locator("#unit-list")).to_be_hidden()
    expect(page.locator("#declaration-password")).to_be_focused()
    expect(page.locator("#unit-chosen")).to_have_text(f"单位：独家单位有限公司（{tin}）")
    # 【忘记申报密码】: the WEB link and a QR code of it, drawn by the project's own renderer.
    page.click("#declaration-help-toggle")
    expect(page.locator("#declaration-help-toggle")).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#declaration-help-link")).to_have_attribute("href", HELP_URL)
    picture = Image.open(io.BytesIO(page.locator("#declaration-help-qr").screenshot()))
    assert decode(picture) == [HELP_URL]
    assert_no_axe_violations(page, "one unit, declaration password, help open")
    shoot(page, "units-one-zh")
    # Back shows the list (with "add a unit"); 【进入】 comes back to the password.
    page.click("#declaration-back")
    expect(page.locator("#unit-list li")).to_have_count(1)
    expect(page.locator("#unit-add")).to_be_visible()
    page.click("#unit-enter")
    expect(page.locator("#declaration")).to_be_visible()
    page.fill("#declaration-password", DECLARATION_PASSWORD)
    page.click("#declaration-submit")
    page.locator("#done").wait_for(state="visible")
    expect(page.locator("#fact-name")).to_have_text("独家单位有限公司")
    # Log out from the entered screen: back at the login.
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()


def test_several_units_select_then_enter_and_the_entered_screen_in_both_languages(
    site: ThreadedGateway, page: Page
) -> None:
    person = new_person(site, name="欧阳娜娜")
    first, second, third = new_tin(), new_tin(), new_tin()
    seed(
        site,
        person["id"],
        (first, "甲贸易有限公司", "legal_rep"),
        (second, "乙科技有限公司", "finance_manager"),
        (third, "丙咨询有限公司", "tax_staff"),
    )
    log_in(page, site, person)
    expect(page.locator("#unit-list li")).to_have_count(3)
    expect(page.locator("#unit-enter")).to_be_visible()
    expect(page.locator("#unit-enter")).to_have_text("进入")
    expect(page.locator("#units-who")).to_have_text("当前登录：欧***")
    expect(page.locator("#declaration")).to_be_hidden()
    assert_no_axe_violations(page, "several units")
    shoot(page, "units-list-zh")
    # A single click only selects; 【进入】 enters the selected one.
    page.locator(f'#unit-list li[data-tin="{second}"]').click()
    expect(page.locator(f'#unit-list li[data-tin="{second}"]')).to_have_attribute("aria-selected", "true")
    expect(page.locator("#declaration")).to_be_hidden()
    page.click("#unit-enter")
    expect(page.locator("#unit-chosen")).to_have_text(f"单位：乙科技有限公司（{second}）")
    page.fill("#declaration-password", DECLARATION_PASSWORD)
    page.click("#declaration-submit")
    page.locator("#done").wait_for(state="visible")
    expect(page.locator("#fact-role")).to_have_text("财务经理")
    expect(page.locator("#fact-via")).to_have_text("申报密码")
    expect(page.locator("#fact-login-time")).to_have_text(re.compile(r"^\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}:\d{2}$"))
    expect(page.locator("#fact-remaining")).to_have_text(re.compile(r"^[45]分\d+秒$"))
    first_left = page.locator("#fact-remaining").inner_text()
    page.wait_for_timeout(1200)
    assert page.locator("#fact-remaining").inner_text() != first_left  # live
    # Words, not raw values, and the raw claims only behind "details".
    facts = page.locator("#unit-facts").inner_text()
    for raw in ("finance_manager", "declaration_password", "tax_staff", "via", "exp"):
        assert raw not in facts
    expect(page.locator("#token-details")).not_to_have_attribute("open", "")
    expect(page.locator("#unit-claims")).to_be_hidden()
    assert_no_axe_violations(page, "entered, Chinese")
    shoot(page, "units-entered-zh")
    page.click("#token-details summary")
    expect(page.locator("#unit-claims")).to_be_visible()
    expect(page.locator("#unit-claims")).to_contain_text('"via":"declaration_password"')
    page.click("#token-details summary")

    page.click("#lang")
    expect(page.locator("#done-heading")).to_have_text("In the unit")
    expect(page.locator("#fact-role")).to_have_text("Finance manager")
    expect(page.locator("#fact-via")).to_have_text("Declaration password")
    expect(page.locator("#fact-login-time")).to_have_text(
        re.compile(r"^\d{1,2} [A-Z][a-z]+ \d{4}(,| at) \d{2}:\d{2}:\d{2}$")
    )
    expect(page.locator("#fact-remaining")).to_have_text(re.compile(r"^[45] min \d+ s$"))
    assert_no_axe_violations(page, "entered, English")
    shoot(page, "units-entered-en")

    # Switch unit: the list again (English now), double-click still enters.
    page.click("#switch-unit")
    expect(page.locator("#unit-list li")).to_have_count(3)
    expect(page.locator("#units-who")).to_have_text("Logged in as 欧***")
    expect(page.locator("#unit-enter")).to_have_text("Enter")
    assert_no_axe_violations(page, "several units, English")
    shoot(page, "units-list-en")
    page.locator(f'#unit-list li[data-tin="{first}"]').dblclick()
    expect(page.locator("#declaration")).to_be_visible()
    page.click("#declaration-help-toggle")
    shoot(page, "units-one-en")
    page.fill("#declaration-password", DECLARATION_PASSWORD)
    page.keyboard.press("Enter")
    page.locator("#done").wait_for(state="visible")
    expect(page.locator("#fact-role")).to_have_text("Legal representative")


def test_add_a_unit_in_english(site: ThreadedGateway, page: Page) -> None:
    person = new_person(site)
    log_in(page, site, person, lang="en")
    expect(page.locator("#unit-link")).to_be_visible()
    expect(page.locator("#units-message")).to_contain_text("You do tax work for no unit yet.")
    page.fill("#link-tin", new_tin())
    page.fill("#link-password", "Wrong-000")
    page.click("#link-submit")
    expect(page.locator("#link-message")).to_have_text(
        "The taxpayer identification number or declaration password is wrong. Attempts left: 4"
    )
    assert_no_axe_violations(page, "add a unit, English")
    shoot(page, "units-add-en")
