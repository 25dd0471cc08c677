"""The browser sign-in page (/signin, gateway/oidc/signin.py): an OpenID Connect relying party sends the
browser to /authorize, the person signs in by password or QR code, and the relying party gets a code.

The relying party is real: a small Starlette app on a port of its own records what its redirect URI
receives. The browser tests drive headless Chromium (the phone is played through the API); the others
speak HTTP to the same gateway, as the page's script does, and hold the answers against the contract.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from websockets.asyncio.client import connect

from gateway.directory.db import create_engine
from gateway.oidc.clients import RelyingParties, RelyingParty, new_party
from gateway.qr.service import SIGNIN_CLIENT
from tests.conftest import new_identity
from tests.support.browser import screenshot
from tests.support.browser_fixtures import launched_browser
from tests.support.gateway_server import (
    CAPTCHA_ANSWER,
    AppServer,
    ThreadedGateway,
    oidc_gateway,
)
from tests.support.schemas import assert_valid
from tests.test_protocols import assert_documented
from tests.test_web_pages import Phone, decode_shown_qr, wait_for_qr

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
with contextlib.suppress(ImportError):  # without Playwright the `browser` fixture skips (fails under CI=true)
    from playwright.sync_api import expect

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PASSWORD, COMPLETE = "/signin/password", "/signin/qr/complete"
CSRF = re.compile(r'data-csrf="([A-Za-z0-9_-]{43})"')


# --- the relying parties ----------------------------------------------------------------------------


@dataclass
class RelyingPartySite:
    """A relying party's web server: records every query its redirect URI receives."""

    base: str
    received: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def callback(self) -> str:
        return f"{self.base}/cb"

    def last(self) -> dict[str, str]:
        with self.lock:
            return self.received[-1]


def relying_party_app(site: RelyingPartySite, gateway_url: str) -> Starlette:
    async def callback(request: Request) -> HTMLResponse:
        with site.lock:
            site.received.append(dict(request.query_params))
        return HTMLResponse("<!doctype html><title>RP</title><p>signed in</p>")

    async def framing(request: Request) -> HTMLResponse:
        # A page of the relying party that tries to show the sign-in page in a frame (clickjacking).
        src = gateway_url + "/signin?" + urlencode({"request": request.query_params["request"]})
        return HTMLResponse(f'<!doctype html><title>frame</title><iframe id="f" src="{src}"></iframe>')

    async def forged(request: Request) -> HTMLResponse:
        # A page of another site that posts to the sign-in page (CSRF): an auto-submitted form.
        fields = "".join(
            f'<input type="hidden" name="{name}" value="{value}">' for name, value in request.query_params.items()
        )
        return HTMLResponse(
            f'<!doctype html><title>evil</title><form id="f" method="post" action="{gateway_url}/signin/password">'
            f"{fields}</form><script>document.getElementById('f').submit()</script>"
        )

    return Starlette(
        routes=[
            Route("/cb", callback),
            Route("/frame", framing),
            Route("/forged", forged),
        ]
    )


def add_party(gateway: ThreadedGateway, party: RelyingParty) -> None:
    """Register `party` as `qrgate admin client add` would (through RelyingParties, on its own loop)."""

    async def add() -> None:
        engine = create_engine(gateway.settings.database_url)
        try:
            await RelyingParties(engine).add(party)
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, add()).result()


def relying_party_site(sso: ThreadedGateway, parties: list[tuple[str, str, list[str]]]) -> Iterator[RelyingPartySite]:
    """A relying party's web server on a free port, with each (client id, name, scopes) registered to
    return to it, for as long as the caller holds it."""
    site = RelyingPartySite("")
    server = AppServer(relying_party_app(site, sso.base_url))
    site.base = f"http://127.0.0.1:{server.port}"
    with server:
        for client_id, name, scopes in parties:
            add_party(sso, new_party(client_id, name=name, redirect_uris=[site.callback], scopes=scopes))
        yield site


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """This module's own Chromium, closed with the module: the session's would keep Playwright's event
    loop running through the async test modules that come after this one (test_protocols, ...)."""
    yield from launched_browser()


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    yield from oidc_gateway(tmp_path_factory.mktemp("signin"))


@pytest.fixture(scope="module")
def rp(sso: ThreadedGateway) -> Iterator[RelyingPartySite]:
    """Two relying parties on one web server: `tax-portal` (税务门户) and `payroll-web` (工资系统)."""
    yield from relying_party_site(
        sso,
        [
            ("tax-portal", "税务门户", ["openid", "profile", "offline_access"]),
            ("payroll-web", "工资系统", ["openid", "profile", "offline_access"]),
        ],
    )


@dataclass
class Authorization:
    """One authorization request, with its PKCE verifier, state and nonce."""

    client_id: str
    redirect_uri: str
    url: str
    verifier: str
    state: str
    nonce: str


def authorization(
    gateway: ThreadedGateway, site: RelyingPartySite, client_id: str = "tax-portal", **extra: str
) -> Authorization:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": site.callback,
        "scope": "openid profile",
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return Authorization(
        client_id, site.callback, f"{gateway.base_url}/authorize?{urlencode(params)}", verifier, state, nonce
    )


def exchange(gateway: ThreadedGateway, request: Authorization, code: str) -> dict[str, Any]:
    """The relying party's token request, and the id_token's claims (its signature checked)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": request.verifier,
        "redirect_uri": request.redirect_uri,
        "client_id": request.client_id,
    }
    answer = httpx.post(f"{gateway.base_url}/v1/token", data=form)
    assert answer.status_code == 200, answer.text
    keys = KeySet.import_key_set(httpx.get(f"{gateway.base_url}/.well-known/jwks.json").json())
    claims: dict[str, Any] = jwt.decode(answer.json()["id_token"], keys).claims
    assert claims["iss"] == gateway.base_url
    assert claims["aud"] == request.client_id
    assert claims["nonce"] == request.nonce
    return claims


def person(gateway: ThreadedGateway) -> dict[str, str]:
    identity = new_identity()
    identity["id"] = gateway.add_person(**identity)
    return identity


def returned(page: Page, site: RelyingPartySite, request: Authorization) -> dict[str, str]:
    """What the relying party's redirect URI received, once the browser arrived there."""
    page.wait_for_url(re.compile("^" + re.escape(site.callback) + r"\?"))
    query = {name: values[0] for name, values in parse_qs(urlsplit(page.url).query).items()}
    assert site.last() == query
    assert query["state"] == request.state
    return query


def password_attempt(page: Page, identifier: str, password: str, captcha: str | None = None) -> None:
    page.fill("#identifier", identifier)
    page.fill("#password", password)
    if captcha is not None:
        page.fill("#captcha-answer", captcha)
    page.click("#password-submit")


# --- in the browser -----------------------------------------------------------------------------------


def test_password_sign_in_then_single_sign_on(sso: ThreadedGateway, rp: RelyingPartySite, page: Page) -> None:
    someone = person(sso)
    request = authorization(sso, rp)
    page.goto(request.url)
    page.wait_for_url(re.compile(r"/signin\?request="))
    expect(page.locator("#signin-title")).to_have_text("登录到 税务门户")
    expect(page).to_have_title("登录到 税务门户")
    expect(page.locator("#signin-return")).to_have_text(f"登录后将返回 {rp.base}")
    wait_for_qr(page)  # the QR tab comes first
    page.click("#tab-password")
    expect(page.locator("#captcha-row")).to_be_hidden()

    password_attempt(page, someone["login_name"], "Wrong-pass9")
    expect(page.locator("#password-message")).to_have_text("账号或密码错误，还可尝试4次")
    expect(page.locator("#captcha-row")).to_be_visible()
    expect(page.locator("#captcha-image")).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    screenshot(page, "signin-password")
    password_attempt(page, someone["login_name"], someone["password"], CAPTCHA_ANSWER)

    got = returned(page, rp, request)
    assert set(got) == {"code", "state", "iss"}
    assert got["iss"] == sso.base_url
    first = exchange(sso, request, got["code"])
    assert first["sub"] == someone["id"]
    assert first["amr"] == ["pwd"]
    assert first["acr"] == "urn:qrgate:acr:password"
    assert first["sid"]
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies(sso.base_url)}
    assert cookies["qrgate-sso"]["httpOnly"]
    assert cookies["qrgate-sso"]["sameSite"] == "Lax"
    assert "qrgate-signin" not in cookies  # the binding is over
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0

    # (c) single sign-on: another relying party in the same browser gets a code at once, with the
    # original sign-in's time and method.
    visited: list[str] = []
    page.on("request", lambda sent: visited.append(sent.url) if sent.is_navigation_request() else None)
    second = authorization(sso, rp, "payroll-web")
    page.goto(second.url)
    again = returned(page, rp, second)
    assert not [url for url in visited if "/signin" in url]
    claims = exchange(sso, second, again["code"])
    assert (claims["sub"], claims["auth_time"], claims["amr"], claims["sid"]) == (
        someone["id"],
        first["auth_time"],
        ["pwd"],
        first["sid"],
    )

    # (d) prompt=login asks again, in this browser too.
    page.goto(authorization(sso, rp, prompt="login").url)
    page.wait_for_url(re.compile(r"/signin\?request="))
    expect(page.locator("#signin-title")).to_have_text("登录到 税务门户")


def test_qr_sign_in_completes_by_itself_and_no_token_reaches_the_page(
    sso: ThreadedGateway, rp: RelyingPartySite, page: Page
) -> None:
    someone = person(sso)
    phone = Phone(sso, someone)
    frames: list[str] = []
    page.on("websocket", lambda socket: socket.on("framereceived", lambda payload: frames.append(str(payload))))
    request = authorization(sso, rp, "payroll-web")
    page.goto(request.url)
    qr_id = wait_for_qr(page)
    expect(page.locator("#signin-title")).to_have_text("登录到 工资系统")
    expect(page.locator("#qr-status")).to_have_text("等待扫码")
    screenshot(page, "signin-qr")

    scanned = phone.scan(qr_id)
    assert scanned.status_code == 200, scanned.text
    assert (scanned.json()["client_id"], scanned.json()["device_name"]) == (SIGNIN_CLIENT, "工资系统")
    expect(page.locator("#qr-status")).to_have_text("已由张*扫描，请在手机上确认")
    screenshot(page, "signin-scanned")
    assert phone.confirm(qr_id).status_code == 204

    got = returned(page, rp, request)
    claims = exchange(sso, request, got["code"])
    assert (claims["sub"], claims["amr"], claims["acr"]) == (someone["id"], ["qr"], "urn:qrgate:acr:app-confirmed")
    messages = [json.loads(frame) for frame in frames]
    assert [message["type"] for message in messages] == ["state", "scanned", "confirmed"]
    assert messages[-1] == {"type": "confirmed"}  # announced, without tokens
    assert not [frame for frame in frames if "access_token" in frame or "refresh_token" in frame]
    phone.http.close()


def test_the_phone_simulator_says_which_relying_party_it_signs_in_to(
    sso: ThreadedGateway, rp: RelyingPartySite, page: Page, browser: Browser
) -> None:
    someone = person(sso)
    request = authorization(sso, rp, "payroll-web")
    page.goto(request.url)
    wait_for_qr(page)
    content = decode_shown_qr(page)
    phone_context = browser.new_context(viewport={"width": 420, "height": 860}, locale="zh-CN")
    try:
        phone = phone_context.new_page()
        phone.goto(sso.base_url + "/demo/app")
        phone.fill("#phone-identifier", someone["login_name"])
        phone.fill("#phone-password", someone["password"])
        phone.click("#phone-login-submit")
        phone.fill("#qr-content", content)
        phone.click("#scan-submit")
        expect(phone.locator("#step-confirm h1")).to_have_text("登录到 工资系统")
        expect(phone.locator("#ctx-client")).to_have_text("工资系统")  # not the internal client id
        expect(phone.locator("#step-confirm")).not_to_contain_text(SIGNIN_CLIENT)
        screenshot(phone, "phone-confirm-signin")
        phone.click("#lang")
        expect(phone.locator("#step-confirm h1")).to_have_text("Sign in to 工资系统")
        phone.click("#accept")
        got = returned(page, rp, request)
        assert exchange(sso, request, got["code"])["sub"] == someone["id"]
    finally:
        phone_context.close()


def test_cancel_sends_access_denied(sso: ThreadedGateway, rp: RelyingPartySite, page: Page) -> None:
    request = authorization(sso, rp)
    page.goto(request.url)
    wait_for_qr(page)
    page.click("#cancel-button")
    got = returned(page, rp, request)
    assert (got["error"], got["iss"]) == ("access_denied", sso.base_url)
    assert "code" not in got
    # The sign-in is over: its page is now the error page.
    signin_url = f"{sso.base_url}/signin?request=gone"
    page.goto(signin_url)
    expect(page.locator("#error-title")).to_contain_text("登录已失效")


def test_a_finished_sign_in_says_so(sso: ThreadedGateway, rp: RelyingPartySite, page: Page) -> None:
    someone = person(sso)
    page.goto(authorization(sso, rp).url)
    wait_for_qr(page)
    form: dict[str, str | float | bool] = {
        "request": page.get_attribute("body", "data-request") or "",
        "csrf": page.get_attribute("body", "data-csrf") or "",
    }
    ended = page.request.post(f"{sso.base_url}/signin/cancel", form=form, max_redirects=0)  # e.g. in another tab
    assert ended.status == 303
    page.click("#tab-password")
    password_attempt(page, someone["login_name"], someone["password"])
    expect(page.locator("#password-message")).to_have_text("本次登录已过期或已完成，请返回应用重新登录")
    page.click("#tab-qr")
    expect(page.locator("#qr-status")).to_have_text("无法获取二维码：本次登录已过期或已完成，请返回应用重新登录")


def test_english_and_a_small_window(sso: ThreadedGateway, rp: RelyingPartySite, page: Page) -> None:
    page.goto(authorization(sso, rp, ui_locales="en").url)
    wait_for_qr(page)
    expect(page.locator("#signin-title")).to_have_text("Sign in to 税务门户")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#tab-qr")).to_have_text("QR code")
    expect(page.locator("#qr-status")).to_have_text("Waiting for a scan")
    expect(page.locator("#cancel-button")).to_have_text("Cancel")
    screenshot(page, "signin-qr-english")
    page.click("#tab-password")
    screenshot(page, "signin-password-english")
    page.set_viewport_size({"width": 800, "height": 560})
    screenshot(page, "signin-password-english-800x560")
    page.click("#lang")
    expect(page.locator("#signin-title")).to_have_text("登录到 税务门户")
    expect(page.locator("#tab-password")).to_have_text("账号密码登录")
    assert "lang=zh" in page.url
    page.click("#tab-qr")
    wait_for_qr(page)
    screenshot(page, "signin-qr-800x560")


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    sso: ThreadedGateway, rp: RelyingPartySite, page: Page
) -> None:
    someone = person(sso)
    request = authorization(sso, rp)
    page.goto(request.url)
    wait_for_qr(page)
    request_id = parse_qs(urlsplit(page.url).query)["request"][0]
    credentials: dict[str, str | float | bool] = {
        "request": request_id,
        "identifier": someone["login_name"],
        "password": someone["password"],
    }
    # With this browser's cookies (a same-site page could make it send them), without or with a wrong token:
    for fields in (credentials, {**credentials, "csrf": "x" * 43}):
        refused = page.request.post(f"{sso.base_url}/signin/password", form=fields)
        assert refused.status == 403, refused.text()
        assert refused.json()["code"] == "invalid_csrf_token"
        assert "set-cookie" not in refused.headers
    # A page of another site (localhost is not 127.0.0.1's site) posting a form: the binding cookie is
    # SameSite=Lax, so it is not even sent.
    received = len(rp.received)
    forged_url = f"http://localhost:{urlsplit(rp.base).port}/forged?" + urlencode(credentials)
    with page.expect_response(f"{sso.base_url}/signin/password") as answer:
        page.goto(forged_url)
    assert answer.value.status == 404
    assert "qrgate-sso" not in {cookie["name"] for cookie in page.context.cookies(sso.base_url)}
    assert len(rp.received) == received
    # Nothing was counted either: the right password with the page's own form needs no captcha.
    page.goto(f"{sso.base_url}/signin?request={request_id}")
    page.click("#tab-password")
    password_attempt(page, someone["login_name"], someone["password"])
    assert "code" in returned(page, rp, request)


def test_the_page_is_never_shown_in_a_frame(sso: ThreadedGateway, rp: RelyingPartySite, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(authorization(sso, rp).url)
        wait_for_qr(page)
        request_id = parse_qs(urlsplit(page.url).query)["request"][0]
        headers = page.request.get(page.url).headers
        assert headers["x-frame-options"] == "DENY"
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy
        assert f"form-action 'self' {rp.base};" in policy
        assert "script-src 'self';" in policy
        assert "unsafe-inline" not in policy
        page.goto(f"{rp.base}/frame?request={request_id}")  # waits for the frame's load (or refusal)
        expect(page.frame_locator("#f").locator("#signin-title")).to_have_count(0)
        inner = page.frames[1]
        assert inner.url == "chrome-error://chromewebdata/", inner.url  # Chromium's page for a refused frame
        assert "signin-title" not in inner.content()
    finally:
        context.close()


# --- over HTTP, as the page's script speaks -------------------------------------------------------------


@dataclass
class SignInSession:
    """A browser (an httpx client with its cookies) at the sign-in page of one authorization."""

    http: httpx.Client
    request: Authorization
    request_id: str
    csrf: str

    def post(self, path: str, **fields: str) -> httpx.Response:
        return self.http.post(path, data={"request": self.request_id, "csrf": self.csrf, **fields}, headers=FORM)


@pytest.fixture
def signin(sso: ThreadedGateway, rp: RelyingPartySite) -> Iterator[SignInSession]:
    with httpx.Client(base_url=sso.base_url, timeout=20) as http:
        request = authorization(sso, rp)
        sent = http.get(request.url)
        assert sent.status_code == 303
        location = sent.headers["location"]
        request_id = parse_qs(urlsplit(location).query)["request"][0]
        page = http.get(location)
        assert page.status_code == 200
        found = CSRF.search(page.text)
        assert found is not None
        yield SignInSession(http, request, request_id, found.group(1))


def test_the_page_headers(sso: ThreadedGateway, signin: SignInSession, rp: RelyingPartySite) -> None:
    page = signin.http.get(f"/signin?request={signin.request_id}")
    assert_documented(page, "GET", "/signin")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["content-security-policy"].endswith(f"form-action 'self' {rp.base}; frame-ancestors 'none'")
    elsewhere = httpx.get(f"{sso.base_url}/signin?request={signin.request_id}")  # another browser
    assert elsewhere.status_code == 404
    assert_documented(elsewhere, "GET", "/signin")
    assert "返回您要登录的应用" in elsewhere.text
    assert elsewhere.headers["x-frame-options"] == "DENY"


def test_qr_result_is_kept_for_the_server_and_taken_once(sso: ThreadedGateway, signin: SignInSession) -> None:
    minted = signin.post("/signin/qr")
    assert minted.status_code == 201, minted.text
    code = assert_documented(minted, "POST", "/signin/qr")
    assert_valid("mint-response.json", code)
    # Another client cannot mint such codes.
    foreign = httpx.post(f"{sso.base_url}/v1/qr", json={"client_id": SIGNIN_CLIENT})
    assert (foreign.status_code, foreign.json()["code"]) == (403, "client_not_allowed")

    phone = Phone(sso, person(sso))
    too_early = signin.post("/signin/qr/complete", waiter_token=code["waiter_token"])
    assert (too_early.status_code, too_early.json()["code"]) == (409, "qr_wrong_state")
    assert_documented(too_early, "POST", COMPLETE)
    assert phone.scan(code["qr_id"]).status_code == 200
    assert phone.confirm(code["qr_id"]).status_code == 204

    waiter = {"Authorization": f"Bearer {code['waiter_token']}"}
    view = httpx.get(f"{sso.base_url}/v1/qr/{code['qr_id']}/state", headers=waiter).json()
    assert_valid("state-view.json", view)
    assert view == {"state": "confirmed", "expires_in": view["expires_in"], "scanner": {"display_name": "张*"}}

    async def socket() -> list[dict[str, Any]]:
        async with connect(f"{sso.ws_url}/v1/qr/{code['qr_id']}/events") as ws:
            await ws.send(json.dumps({"type": "hello", "waiter_token": code["waiter_token"]}))
            return [json.loads(await ws.recv()), json.loads(await ws.recv())]

    with ThreadPoolExecutor(1) as pool:  # a loop of its own, whatever runs in this thread
        state, confirmed = pool.submit(asyncio.run, socket()).result()
    assert_valid("ws-state.json", state)
    assert_valid("ws-confirmed.json", confirmed)
    assert confirmed == {"type": "confirmed"}

    wrong = signin.post("/signin/qr/complete", waiter_token="w" * 43)
    assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_waiter_token")
    assert_documented(wrong, "POST", COMPLETE)
    done = signin.post("/signin/qr/complete", waiter_token=code["waiter_token"])
    assert done.status_code == 200, done.text
    assert_documented(done, "POST", COMPLETE)
    target = urlsplit(done.json()["redirect"])
    query = {name: values[0] for name, values in parse_qs(target.query).items()}
    assert f"{target.scheme}://{target.netloc}{target.path}" == signin.request.redirect_uri
    assert query["state"] == signin.request.state
    assert "qrgate-sso" in signin.http.cookies
    assert exchange(sso, signin.request, query["code"])["amr"] == ["qr"]
    # Once only: the sign-in is finished, and the code's result is delivered.
    again = signin.post("/signin/qr/complete", waiter_token=code["waiter_token"])
    assert (again.status_code, again.json()["code"]) == (404, "signin_not_found")
    assert_documented(again, "POST", COMPLETE)
    after = httpx.get(f"{sso.base_url}/v1/qr/{code['qr_id']}/state", headers=waiter).json()
    assert after["state"] == "delivered"
    phone.http.close()


def test_an_older_code_cannot_complete_the_sign_in(sso: ThreadedGateway, signin: SignInSession) -> None:
    older = signin.post("/signin/qr").json()
    newer = signin.post("/signin/qr").json()
    phone = Phone(sso, person(sso))
    assert phone.scan(older["qr_id"]).status_code == 200
    assert phone.confirm(older["qr_id"]).status_code == 204
    refused = signin.post("/signin/qr/complete", waiter_token=older["waiter_token"])
    assert (refused.status_code, refused.json()["code"]) == (401, "invalid_waiter_token")
    assert newer["qr_id"] != older["qr_id"]
    phone.http.close()


def test_password_refusals_are_the_login_s(sso: ThreadedGateway, signin: SignInSession) -> None:
    someone = person(sso)
    wrong = signin.post("/signin/password", identifier=someone["phone"], password="Wrong-pass9")
    assert (wrong.status_code, wrong.json()["code"], wrong.json()["attempts_left"]) == (401, "invalid_credentials", 4)
    forged = signin.http.post("/signin/password", data={"request": signin.request_id, "identifier": "x"}, headers=FORM)
    assert (forged.status_code, forged.json()["code"]) == (403, "invalid_csrf_token")
    for refused in (wrong, forged):
        assert_documented(refused, "POST", PASSWORD)
    no_captcha = signin.post("/signin/password", identifier=someone["phone"], password=someone["password"])
    assert (no_captcha.status_code, no_captcha.json()["code"]) == (400, "captcha_required")
    unknown = signin.post("/signin/password", identifier="nobody_here", password="Wrong-pass9")
    assert (unknown.status_code, unknown.json()["code"]) == (401, "invalid_credentials")
    missing = signin.post("/signin/password", identifier=someone["phone"])
    assert (missing.status_code, missing.json()["code"]) == (400, "invalid_request")
    for refused in (no_captcha, unknown, missing):
        assert_documented(refused, "POST", PASSWORD)
    captcha = httpx.post(f"{sso.base_url}/v1/captcha").json()
    right = signin.post(
        "/signin/password",
        identifier=someone["phone"],
        password=someone["password"],
        captcha_id=captcha["captcha_id"],
        captcha_answer=CAPTCHA_ANSWER,
    )
    assert right.status_code == 200, right.text
    assert set(assert_documented(right, "POST", PASSWORD)) == {"redirect"}
    assert "access_token" not in right.text


def test_cancel_is_a_plain_form_post(signin: SignInSession) -> None:
    forged = signin.http.post("/signin/cancel", data={"request": signin.request_id}, headers=FORM)
    assert (forged.status_code, forged.json()["code"]) == (403, "invalid_csrf_token")
    cancelled = signin.post("/signin/cancel")
    assert cancelled.status_code == 303
    for answer in (forged, cancelled):
        assert_documented(answer, "POST", "/signin/cancel")
    query = parse_qs(urlsplit(cancelled.headers["location"]).query)
    assert (query["error"], query["state"]) == (["access_denied"], [signin.request.state])
    assert "qrgate-signin" not in signin.http.cookies
    gone = signin.post("/signin/cancel")
    assert gone.status_code == 404
    assert_documented(gone, "POST", "/signin/cancel")
