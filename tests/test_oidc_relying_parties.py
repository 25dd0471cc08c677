"""Real relying-party libraries drive qrgate's OpenID Connect provider end to end (issue 14, "How it is
tested"), with headless Chromium as the person's browser and a running gateway (uvicorn in a thread).

Relying party A is openid-client (Node, tests/e2e/rp.mjs), a confidential client; relying party B is
Authlib (Python, AsyncOAuth2Client), a public client. Each has its web server on a port of its own:
its redirect URI (the browser lands there), its post-logout redirect URI and its back-channel logout
endpoint. The flow: A sends the browser to qrgate, the person signs in on qrgate's page (by QR code,
the phone played through the API, or by password), A exchanges the code, checks the id_token, reads
UserInfo and refreshes; B then gets single sign-on in the same browser, without the sign-in page, and
checks its tokens the same way; A's RP-initiated logout signs the browser out and returns to A; B's
back-channel endpoint receives a logout token for the session; neither refresh token works any more,
and B's next authorization request shows the sign-in page again.

Every wait is on a condition, with a bound; every server and process is stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import secrets
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import parse_qs, urlsplit

import authlib.deprecate
import pytest
from authlib.common.security import generate_token
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from gateway.oidc.clients import new_party
from tests.conftest import new_identity
from tests.support.browser import PageProblems, screenshot
from tests.support.browser_fixtures import launched_browser
from tests.support.gateway_server import AppServer, ThreadedGateway, oidc_gateway
from tests.support.redis_procs import in_ci
from tests.test_oidc_signin import add_party
from tests.test_web_pages import Phone, wait_for_qr

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# Authlib >= 1.9 would rather its httpx integration ran on the httpx2 fork; the httpx it finds works. (Its
# `deprecate` module, imported above, puts an "always" filter first on import; this one comes before it.)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "The httpx module is deprecated", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

E2E = Path(__file__).parent / "e2e"
SCOPE = "openid profile phone offline_access"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
ACR = {"qr": "urn:qrgate:acr:app-confirmed", "pwd": "urn:qrgate:acr:password"}
WAIT = 20.0  # s: the bound on waiting for another process (node, the gateway, the browser)
BACKCHANNEL_WITHIN = 5.0  # s: a logout token reaches the relying party within this
NPM_INSTALL_TIMEOUT = 150  # s
T = TypeVar("T")


def unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason}, and CI=true requires the relying-party tests to run")
    pytest.skip(reason)


# --- the Node relying party (openid-client) ------------------------------------------------------------


@pytest.fixture(scope="module")
def rp_command() -> list[str]:
    """`node tests/e2e/rp.mjs`, with its openid-client installed (`npm install` in tests/e2e when missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("Node.js and npm are not installed (bash scripts/services installs them)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    if int(version.strip().lstrip("v").split(".")[0]) < 20:
        unavailable(f"openid-client 6 needs Node.js 20 or later, this is {version.strip()}")
    if not (E2E / "node_modules" / "openid-client" / "package.json").is_file():
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund"],
                cwd=E2E,
                capture_output=True,
                text=True,
                timeout=NPM_INSTALL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            unavailable(f"npm install in tests/e2e took more than {NPM_INSTALL_TIMEOUT} s")
        if done.returncode != 0:
            unavailable(f"npm install in tests/e2e failed ({done.returncode}): {done.stderr[-1500:]}")
    return [node, str(E2E / "rp.mjs")]


class NodeRelyingParty:
    """`node rp.mjs ...`: one JSON object a line on its standard output, commands on its standard input."""

    def __init__(self, command: list[str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [*command, *args],
            cwd=E2E,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors: list[str] = []
        self.readers = [
            threading.Thread(target=self._read_output, daemon=True),
            threading.Thread(target=self._read_errors, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # it ended

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line)

    def receive(self) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"rp.mjs said nothing within {WAIT} s: {''.join(self.errors)}") from None
        if line is None:
            raise AssertionError(f"rp.mjs ended ({self.proc.wait(WAIT)}): {''.join(self.errors)}")
        message: dict[str, Any] = json.loads(line)
        return message

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # rp.mjs ends when its input does
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
        for reader in self.readers:
            reader.join(WAIT)  # at the end of its stream, now that the process is gone
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# --- the relying parties' web servers ---------------------------------------------------------------------


@dataclass
class RelyingPartySite:
    """A relying party's web server: records what its redirect URI, its post-logout redirect URI and its
    back-channel logout endpoint receive (the test checks the logout tokens as the relying party must)."""

    base: str = ""
    callbacks: list[str] = field(default_factory=list)  # the URLs the browser came back to
    signed_out: list[dict[str, str]] = field(default_factory=list)  # the post-logout redirects' queries
    logout_tokens: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def redirect_uri(self) -> str:
        return f"{self.base}/callback"

    @property
    def post_logout_redirect_uri(self) -> str:
        return f"{self.base}/signed-out"

    @property
    def backchannel_logout_uri(self) -> str:
        return f"{self.base}/backchannel-logout"

    def _record(self, items: list[T], item: T) -> None:
        with self.changed:
            items.append(item)
            self.changed.notify_all()

    def wait_for(self, found: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
        with self.changed:
            result = self.changed.wait_for(found, timeout)
        assert result is not None, f"{what}: not within {timeout} s"
        return result

    def app(self) -> Starlette:
        async def callback(request: Request) -> HTMLResponse:
            self._record(self.callbacks, str(request.url))
            return HTMLResponse("<!doctype html><title>RP</title><p>back at the relying party</p>")

        async def signed_out(request: Request) -> HTMLResponse:
            self._record(self.signed_out, dict(request.query_params))
            return HTMLResponse("<!doctype html><title>RP</title><p>signed out</p>")

        async def backchannel_logout(request: Request) -> Response:
            (token,) = parse_qs((await request.body()).decode())["logout_token"]
            self._record(self.logout_tokens, token)
            return Response(status_code=200, headers={"Cache-Control": "no-store"})

        return Starlette(
            routes=[
                Route("/callback", callback),
                Route("/signed-out", signed_out),
                Route("/backchannel-logout", backchannel_logout, methods=["POST"]),
            ]
        )


# --- Authlib's asynchronous client, on an event loop of its own ----------------------------------------


class LoopThread:
    """An event loop in a thread: Playwright's synchronous API holds this thread's loop meanwhile."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(WAIT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


@dataclass
class AuthlibRequest:
    url: str
    state: str
    nonce: str
    verifier: str


class AuthlibParty:
    """Relying party B: Authlib's AsyncOAuth2Client, a public client with PKCE S256, configured from
    discovery; the id_token checked by Authlib's CodeIDToken after joserfc verified its signature with
    the JWKS that discovery names."""

    def __init__(self, aio: LoopThread, issuer: str, client_id: str, redirect_uri: str) -> None:
        self.aio, self.issuer, self.client_id = aio, issuer, client_id
        self.client: Any = aio.run(self._open(redirect_uri))

    async def _open(self, redirect_uri: str) -> Any:
        client = AsyncOAuth2Client(
            self.client_id,
            scope=SCOPE,
            redirect_uri=redirect_uri,
            token_endpoint_auth_method="none",
            code_challenge_method="S256",
            timeout=WAIT,
        )
        discovery = await client.request("GET", f"{self.issuer}/.well-known/openid-configuration", withhold_token=True)
        self.metadata: dict[str, Any] = discovery.json()
        assert self.metadata["issuer"] == self.issuer
        jwks = await client.request("GET", self.metadata["jwks_uri"], withhold_token=True)
        self.keys = KeySet.import_key_set(jwks.json())
        return client

    def authorization(self) -> AuthlibRequest:
        verifier, nonce = generate_token(48), generate_token(20)
        url, state = self.client.create_authorization_url(
            self.metadata["authorization_endpoint"], nonce=nonce, code_verifier=verifier
        )
        return AuthlibRequest(url, state, nonce, verifier)

    def sign_in(self, request: AuthlibRequest, callback: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The code exchange (Authlib checks `state`), and the id_token's checked claims."""
        tokens: dict[str, Any] = self.aio.run(
            self.client.fetch_token(
                self.metadata["token_endpoint"],
                authorization_response=callback,
                state=request.state,
                code_verifier=request.verifier,
            )
        )
        return tokens, self.id_token_claims(tokens["id_token"], tokens["access_token"], request.nonce)

    def id_token_claims(self, id_token: str, access_token: str, nonce: str) -> dict[str, Any]:
        decoded = jwt.decode(id_token, self.keys, algorithms=self.metadata["id_token_signing_alg_values_supported"])
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            {"iss": {"essential": True, "value": self.issuer}, "aud": {"essential": True, "value": self.client_id}},
            {"nonce": nonce, "client_id": self.client_id, "access_token": access_token},
        )
        claims.validate(leeway=5)  # iss, aud, exp, iat, auth_time, nonce, azp, at_hash (with the token's alg)
        assert claims["at_hash"]
        assert claims["nonce"] == nonce
        return dict(claims)

    def userinfo(self) -> dict[str, Any]:
        answer = self.aio.run(self.client.get(self.metadata["userinfo_endpoint"]))  # with the bearer token
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def refresh(self) -> dict[str, Any]:
        tokens: dict[str, Any] = self.aio.run(self.client.refresh_token(self.metadata["token_endpoint"]))
        return tokens

    def close(self) -> None:
        self.aio.run(self.client.aclose())


# --- fixtures --------------------------------------------------------------------------------------------


@dataclass
class Parties:
    a: RelyingPartySite  # openid-client, confidential
    a_secret: str
    b: RelyingPartySite  # Authlib, public


A_ID, A_NAME = "etax-openid-client", "电子税务局"
B_ID, B_NAME = "invoice-authlib", "发票查验"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """This module's own Chromium (see tests/test_oidc_signin.py: async modules come after it)."""
    yield from launched_browser()


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    yield from oidc_gateway(tmp_path_factory.mktemp("relying-parties"))


@pytest.fixture(scope="module")
def parties(sso: ThreadedGateway) -> Iterator[Parties]:
    """A's and B's web servers, each on a port of its own, and both registered as `qrgate admin client
    add` registers them (A with a secret, B public; both with every URI and the scopes of SCOPE)."""
    a, b = RelyingPartySite(), RelyingPartySite()
    secret = secrets.token_urlsafe(32)
    with AppServer(a.app()) as a.base, AppServer(b.app()) as b.base:
        for site, client_id, name, client_secret in ((a, A_ID, A_NAME, secret), (b, B_ID, B_NAME, None)):
            party = new_party(
                client_id,
                name=name,
                redirect_uris=[site.redirect_uri],
                secret=client_secret,
                post_logout_redirect_uris=[site.post_logout_redirect_uri],
                backchannel_logout_uri=site.backchannel_logout_uri,
                scopes=SCOPE.split(),
            )
            add_party(sso, party)
        yield Parties(a, secret, b)


@pytest.fixture(scope="module")
def aio() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser (context) for one person, which must end without console errors."""
    context = browser.new_context(viewport={"width": 1100, "height": 760}, locale="zh-CN")
    context.set_default_timeout(WAIT * 1000)
    opened = context.new_page()
    problems = PageProblems(opened)
    yield opened
    context.close()
    assert problems.messages == [], problems.messages


@pytest.fixture
def node_rp(rp_command: list[str]) -> Iterator[Callable[..., NodeRelyingParty]]:
    """Start rp.mjs with these arguments; every one started is ended after the test."""
    started: list[NodeRelyingParty] = []

    def start(*args: str) -> NodeRelyingParty:
        started.append(NodeRelyingParty(rp_command, *args))
        return started[-1]

    yield start
    for process in started:
        process.close()


@pytest.fixture
def authlib_b(
    sso: ThreadedGateway, parties: Parties, aio: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AuthlibParty]:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the test issuer is http://127.0.0.1
    party = AuthlibParty(aio, sso.base_url, B_ID, parties.b.redirect_uri)
    yield party
    party.close()


# --- helpers -------------------------------------------------------------------------------------------------


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def arrived(page: Page, site: RelyingPartySite) -> str:
    """The URL of the browser once it is back at `site`'s redirect URI (which the site received too)."""
    page.wait_for_url(re.compile("^" + re.escape(site.redirect_uri) + r"\?"))
    url = page.url
    site.wait_for(lambda: url in site.callbacks or None, "the relying party received the callback")
    return url


def navigations(page: Page) -> list[str]:
    """Every URL the page navigates to from now on (redirects included)."""
    visited: list[str] = []
    page.on("request", lambda sent: visited.append(sent.url) if sent.is_navigation_request() else None)
    return visited


def logout_claims(token: str, keys: KeySet, issuer: str, client_id: str) -> dict[str, Any]:
    """A logout token checked as a relying party must (Back-Channel Logout 1.0 2.6)."""
    decoded = jwt.decode(token, keys, algorithms=["ES256", "EdDSA"])
    claims: dict[str, Any] = decoded.claims
    assert decoded.header["typ"] == "logout+jwt"
    assert (claims["iss"], claims["aud"]) == (issuer, client_id)
    assert claims["events"] == {BACKCHANNEL_EVENT: {}}
    assert "nonce" not in claims
    assert claims["iat"] - 5 <= time.time() < claims["exp"]
    return claims


def sign_in_on_the_page(page: Page, sso: ThreadedGateway, person: dict[str, str], method: str) -> None:
    """What the person does on qrgate's sign-in page (shown for A's request), screenshots along."""
    page.wait_for_url(re.compile(r"/signin\?request="))
    qr_id = wait_for_qr(page, timeout=WAIT)  # the QR tab comes first
    assert page.locator("#signin-title").inner_text() == f"登录到 {A_NAME}"
    if method == "qr":
        screenshot(page, "relying-parties-signin-qr")
        phone = Phone(sso, person)  # the app: password login as mobile-app, then scan and confirm
        try:
            assert phone.scan(qr_id).status_code == 200
            page.wait_for_function(
                "document.getElementById('qr-status').textContent.includes('已由')", timeout=WAIT * 1000
            )
            screenshot(page, "relying-parties-signin-qr-scanned")
            assert phone.confirm(qr_id).status_code == 204
        finally:
            phone.http.close()
    else:
        page.click("#tab-password")
        page.fill("#identifier", person["login_name"])
        page.fill("#password", person["password"])
        screenshot(page, "relying-parties-signin-password")
        page.click("#password-submit")


# --- the flow --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "amr"), [("qr", "qr"), ("password", "pwd")])
def test_openid_client_and_authlib_sign_in_single_sign_on_and_log_out(
    method: str,
    amr: str,
    sso: ThreadedGateway,
    parties: Parties,
    page: Page,
    node_rp: Callable[..., NodeRelyingParty],
    authlib_b: AuthlibParty,
) -> None:
    issuer = sso.base_url
    person = new_identity()
    person["id"] = sso.add_person(**person)

    # 1. Relying party A (openid-client) sends the browser to qrgate; the person signs in there.
    a_party = node_rp(issuer, A_ID, parties.a_secret, parties.a.redirect_uri, SCOPE, parties.a.post_logout_redirect_uri)
    started = a_party.receive()
    assert "authorization_url" in started, started
    assert started["authorization_url"].startswith(f"{issuer}/authorize?")
    page.goto(started["authorization_url"])
    sign_in_on_the_page(page, sso, person, method)
    a_party.send(arrived(page, parties.a))
    a = a_party.receive()
    assert "error" not in a, a
    # openid-client checked the callback (state, iss), the code exchange (PKCE, the secret by Basic), and
    # the id_token (signature against the JWKS, iss, aud, azp, exp, iat, nonce); rp.mjs checked at_hash.
    a_claims = a["claims"]
    assert (a_claims["iss"], a_claims["aud"], a_claims["sub"]) == (issuer, A_ID, person["id"])
    assert a_claims["amr"] == [amr]
    assert a_claims["acr"] == ACR[amr]
    assert a_claims["sid"]
    assert a_claims["at_hash"]
    assert not {"name", "phone_number"} & set(a_claims)  # personal data only at UserInfo
    assert a["userinfo"] == {
        "sub": person["id"],
        "name": person["name"],
        "preferred_username": person["login_name"],
        "phone_number": "+86" + person["phone"],
        "phone_number_verified": True,
    }
    assert a["refreshed"] is True

    # 2. Relying party B (Authlib) in the same browser: single sign-on, a code at once.
    visited = navigations(page)
    b_request = authlib_b.authorization()
    page.goto(b_request.url)
    b_callback = arrived(page, parties.b)
    assert not [url for url in visited if "/signin" in url], visited
    assert query_of(b_callback)["iss"] == issuer  # RFC 9207 (Authlib does not check it)
    b_tokens, b_claims = authlib_b.sign_in(b_request, b_callback)
    assert {"access_token", "id_token", "refresh_token"} <= set(b_tokens)
    assert (b_claims["sub"], b_claims["aud"], b_claims["azp"]) == (person["id"], B_ID, B_ID)
    assert (b_claims["auth_time"], b_claims["amr"], b_claims["acr"], b_claims["sid"]) == (
        a_claims["auth_time"],
        [amr],
        ACR[amr],
        a_claims["sid"],
    )
    assert authlib_b.userinfo() == a["userinfo"]
    refreshed = authlib_b.refresh()
    assert refreshed["refresh_token"] != b_tokens["refresh_token"]  # rotated
    assert authlib_b.userinfo()["sub"] == person["id"]  # with the new access token

    # 3. A's RP-initiated logout: the browser is signed out and sent back to A with A's state.
    sid = a_claims["sid"]
    logged_out_at = time.monotonic()
    page.goto(a["end_session_url"])
    page.wait_for_url(re.compile("^" + re.escape(parties.a.post_logout_redirect_uri) + r"\?"))
    assert query_of(page.url) == {"state": "bye"}
    parties.a.wait_for(lambda: {"state": "bye"} in parties.a.signed_out or None, "A's post-logout redirect")
    assert "qrgate-sso" not in {cookie["name"] for cookie in page.context.cookies(issuer)}

    # B's back-channel endpoint gets a valid logout token for the session, within 5 s; A's gets one too.
    def token_for(site: RelyingPartySite, client_id: str) -> dict[str, Any] | None:
        for token in site.logout_tokens:
            claims = logout_claims(token, authlib_b.keys, issuer, client_id)
            if claims["sid"] == sid:
                return claims
        return None

    b_logout = parties.b.wait_for(lambda: token_for(parties.b, B_ID), "B's logout token", BACKCHANNEL_WITHIN)
    assert time.monotonic() - logged_out_at < BACKCHANNEL_WITHIN
    assert (b_logout["sub"], b_logout["sid"]) == (person["id"], b_claims["sid"])
    a_logout = parties.a.wait_for(lambda: token_for(parties.a, A_ID), "A's logout token", BACKCHANNEL_WITHIN)
    assert a_logout["sub"] == person["id"]

    # Neither relying party's refresh token works any more.
    with pytest.raises(OAuthError) as refused:
        authlib_b.refresh()
    assert refused.value.error == "invalid_grant"
    a_party.send("refresh")
    a_refused = a_party.receive()
    assert "refreshed" not in a_refused, a_refused
    assert a_refused.get("status", 400) == 400, a_refused
    # openid-client reads an OAuth error only from an application/json body (RFC 6749 5.2), which is how
    # qrgate serves its OAuth endpoints' problems: the library itself names the error.
    assert a_refused.get("oauth_error") == "invalid_grant", a_refused

    # B's next authorization request shows the sign-in page again.
    page.goto(authlib_b.authorization().url)
    page.wait_for_url(re.compile(r"/signin\?request="))
    wait_for_qr(page, timeout=WAIT)
    assert page.locator("#signin-title").inner_text() == f"登录到 {B_NAME}"
    screenshot(page, f"relying-parties-signin-after-logout-{method}")


def test_openid_client_authenticates_with_private_key_jwt(
    sso: ThreadedGateway, page: Page, node_rp: Callable[..., NodeRelyingParty], tmp_path: Path
) -> None:
    """openid-client's `PrivateKeyJwt`: the code exchange and the refreshes carry assertions signed with
    the relying party's key, whose public half alone was registered (`--jwks-file`)."""
    issuer = sso.base_url
    key = ECKey.generate_key("P-256", auto_kid=True)
    private_jwk = tmp_path / "private.jwk.json"
    private_jwk.write_text(json.dumps(key.as_dict(private=True)))
    person = new_identity()
    person["id"] = sso.add_person(**person)
    site = RelyingPartySite()
    with AppServer(site.app()) as site.base:
        party = new_party(
            "keyed-openid-client",
            name="社保费",
            redirect_uris=[site.redirect_uri],
            post_logout_redirect_uris=[site.post_logout_redirect_uri],
            jwks={"keys": [key.as_dict(private=False)]},
            scopes=SCOPE.split(),
        )
        add_party(sso, party)
        rp = node_rp(
            issuer, party.client_id, f"jwk:{private_jwk}", site.redirect_uri, SCOPE, site.post_logout_redirect_uri
        )
        started = rp.receive()
        assert "authorization_url" in started, started
        page.goto(started["authorization_url"])
        page.wait_for_url(re.compile(r"/signin\?request="))
        assert page.locator("#signin-title").inner_text() == "登录到 社保费"
        page.click("#tab-password")
        page.fill("#identifier", person["login_name"])
        page.fill("#password", person["password"])
        page.click("#password-submit")
        rp.send(arrived(page, site))
        signed_in = rp.receive()
        assert "error" not in signed_in, signed_in
        assert (signed_in["claims"]["aud"], signed_in["claims"]["sub"]) == (party.client_id, person["id"])
        assert signed_in["userinfo"]["name"] == person["name"]
        assert signed_in["refreshed"] is True  # a refresh, authenticated by a second assertion
        rp.send("refresh")
        assert rp.receive() == {"refreshed": True}  # and a third: every assertion is a new one
