"""The pages over plain HTTP: what they are allowed to load and do (CSP and friends), what they say,
and the QR images at every size through the real route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from gateway.qr import render
from gateway.qr.symbol import encode
from gateway.web import pages
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings
from tests.support.qr_decode import decode_png, decode_svg


@pytest.fixture
def http(gateway: ThreadedGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        yield client


def mint(http: httpx.Client) -> dict[str, str]:
    answer = http.post("/v1/qr", json={"client_id": "withholding-desktop"})
    assert answer.status_code == 201
    minted: dict[str, str] = answer.json()
    return minted


class Markup(HTMLParser):
    """Scripts, inline handlers and inline styles of a page (a strict CSP would block the last two)."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.scripts.append(found)
        self.inline += [f"{tag} {name}" for name in found if name.startswith("on") or name == "style"]

    def handle_data(self, data: str) -> None:
        if self.lasttag == "script" and data.strip():
            self.inline.append("inline script")


@pytest.mark.parametrize(
    "path", ["/", "/demo/app", "/q/AAAAAAAAAAAAAAAAAAAAAA", "/register", "/forgot-password", "/change-password"]
)
def test_pages_carry_a_strict_policy(http: httpx.Client, path: str) -> None:
    answer = http.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    assert policy["connect-src"] == f"'self' ws://{http.base_url.netloc.decode()}"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["form-action"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert "unsafe" not in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    markup = Markup()
    markup.feed(answer.text)
    assert markup.inline == []
    assert all(script.get("src", "").startswith("/web/") for script in markup.scripts)  # type: ignore[union-attr]


def test_a_forged_host_does_not_reach_the_policy() -> None:
    assert pages.content_security_policy("evil.example; script-src *", secure=False).count("script-src") == 1
    assert "wss://gate.example:8443" in pages.content_security_policy("gate.example:8443", secure=True)


def test_static_files(http: httpx.Client) -> None:
    for name in ("desktop.js", "phone.js", "units.js", "common.js", "i18n.js", "qrgate.css"):
        answer = http.get(f"/web/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-cache"
        assert "etag" in answer.headers
    assert http.get("/web/desktop.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))
    missing = http.get("/web/nothing.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert http.get("/web/../pages.py").status_code == 404


# The one thing a page leaves in the tab's sessionStorage: the identifier a person goes back to the
# login page with (after registering or resetting a password, or on the way to change a hall temporary
# password), removed by the page that reads it. Personal data stays out of URLs this way.
HANDOVER_KEYS = {'"qrgate.login-identifier"', '"qrgate.password-change"', "LOGIN_IDENTIFIER_KEY", "PASSWORD_CHANGE_KEY"}


def test_no_script_keeps_a_token_in_storage_or_a_url() -> None:
    names = ("desktop.js", "phone.js", "units.js", "common.js", "i18n.js", "password.js", "register.js", "forgot.js",
             "account.js", "keyboard.js", "entered.js")  # fmt: skip
    for script in (Path(pages.STATIC) / name for name in names):
        text = script.read_text()
        assert "localStorage" not in text, script
        for key, value in re.findall(r"sessionStorage\.setItem\(([^,]+),\s*([^)]*)\)", text):
            assert key.strip() in HANDOVER_KEYS, (script, key)
            assert not re.search(r"token|ticket|password", value, re.IGNORECASE), (script, value)
        assert "document.cookie" not in text, script
        assert not re.search(r"[?&](access_token|waiter_token|token)=", text), script


def test_the_landing_page_says_the_same_for_every_code(http: httpx.Client, gateway: ThreadedGateway) -> None:
    minted = mint(http)
    live = http.get(minted["qr_content"])
    unknown = http.get("/q/" + "Z" * 22)
    assert live.text == unknown.text
    assert "请使用个人所得税App扫码" in live.text
    assert "Scan this code with the tax app" in live.text
    assert minted["qr_id"] not in live.text
    assert live.headers["cache-control"] == "public, max-age=3600"


def test_the_desktop_page_knows_whether_units_are_mounted(tmp_path: Path) -> None:
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path, port, units_mount=False, demo_app=False), port).start()
    try:
        page = httpx.get(server.base_url + "/")
        assert 'data-units="false"' in page.text
        assert f'data-public-url="{server.base_url}"' in page.text
        assert httpx.get(server.base_url + "/demo/app").status_code == 404
    finally:
        server.stop()


def test_the_desktop_page_with_units(http: httpx.Client) -> None:
    assert 'data-units="true"' in http.get("/").text


@pytest.mark.parametrize("kind", ["svg", "png"])
def test_images_at_every_size_read_back(http: httpx.Client, kind: str) -> None:
    minted = mint(http)
    side = encode(minted["qr_content"]).size + 2 * render.BORDER
    for size in render.SIZES:
        answer = http.get(f"/v1/qr/{minted['qr_id']}.{kind}", params={"size": size})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == render.MEDIA_TYPES[kind]
        read = decode_png(answer.content) if kind == "png" else decode_svg(answer.content)
        assert read == [minted["qr_content"]], size
        if kind == "svg":
            assert f'width="{side * size}" height="{side * size}"' in answer.text
    assert http.get(f"/v1/qr/{minted['qr_id']}.{kind}").content == render.QrImages().render(
        minted["qr_content"], kind, render.DEFAULT_SIZE
    )


@pytest.mark.parametrize("size", ["0", "1", "17", "99", "-3", "6.0", "six", "", "６", "9" * 5000])
def test_sizes_not_offered_are_refused(http: httpx.Client, size: str) -> None:
    minted = mint(http)
    answer = http.get(f"/v1/qr/{minted['qr_id']}.svg", params={"size": size})
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_request"
    assert "size" in answer.json()["detail"]
