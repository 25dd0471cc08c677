"""A live OpenID provider for tests, and relying parties signing people in through it.

`live_provider` runs the gateway's `Services` in the test's own event loop, served by uvicorn on a
free port (the app of `create_app` over those same services): the test talks HTTP to /authorize,
/v1/token, /logout and /v1/sessions, and reaches the services directly for the one step that needs a
person at a browser, the sign-in (`OidcProvider.pending` and `complete`, what the sign-in page does
once the person is known). Real state store, real database, real HTTP.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import Services, create_app
from gateway.cli import add_person_record
from gateway.oidc import id_tokens
from gateway.oidc.clients import RelyingParty, new_party
from gateway.oidc.provider import SignedIn
from gateway.oidc.requests import s256
from gateway.settings import Settings
from tests.conftest import new_identity
from tests.support.accounts import FakeService
from tests.support.gateway_server import free_port, make_settings
from tests.support.schemas import jwt_parts

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class LiveProvider:
    services: Services
    settings: Settings
    base_url: str
    http: httpx.AsyncClient  # to base_url; keeps no cookies of its own (each browser is explicit)

    @property
    def session_cookie(self) -> str:
        return self.services.oidc.session_cookie


@asynccontextmanager
async def live_provider(tmp: Path, **overrides: Any) -> AsyncIterator[LiveProvider]:
    port = free_port()
    settings = make_settings(tmp, port, **{"units_mount": False, **overrides})
    services = Services.create(settings)
    app = create_app(settings, services=services)
    async with services.running():  # the lifespan is ours: uvicorn runs with lifespan="off"
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False)
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        try:
            async with httpx.AsyncClient(base_url=settings.issuer, timeout=20) as http:
                yield LiveProvider(services, settings, settings.issuer, http)
        finally:
            server.should_exit = True
            await serving


async def register(
    live: LiveProvider,
    client_id: str,
    *,
    backchannel_logout_uri: str | None = None,
    post_logout_redirect_uris: Sequence[str] = (),
) -> RelyingParty:
    """A public relying party, as `qrgate admin client add` registers it."""
    party = new_party(
        client_id,
        name=f"App {client_id}",
        redirect_uris=[f"https://{client_id}.example/cb"],
        post_logout_redirect_uris=post_logout_redirect_uris,
        backchannel_logout_uri=backchannel_logout_uri,
    )
    await live.services.oidc.parties.add(party)
    return party


async def add_person(live: LiveProvider) -> str:
    """A person in the directory (through `qrgate admin person add`'s code path); their id."""
    identity = new_identity()
    return await add_person_record(live.settings, **{k: v for k, v in identity.items() if k != "id"})


async def app_bearer(live: LiveProvider, subject: str) -> dict[str, str]:
    """The Authorization header of a mobile-app session of `subject` (as after a password login on
    the phone): the first-party token that manages the person's sessions (scope `sessions`)."""
    tokens = await live.services.tokens.sessions.start(subject=subject, client_id="mobile-app", amr=["pwd"])
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@dataclass
class Browser:
    """What a browser keeps of the provider: its single sign-on cookie (once signed in)."""

    sso_cookie: str | None = None

    def headers(self, live: LiveProvider, **more: str) -> dict[str, str]:
        """The Cookie header it sends to the provider (with `more` cookies)."""
        cookies = {live.session_cookie: self.sso_cookie, **more} if self.sso_cookie else more
        return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())} if cookies else {}


@dataclass
class RpSignIn:
    """A relying party's sign-in: its token response and the id_token's claims."""

    tokens: dict[str, Any]
    claims: dict[str, Any]

    @property
    def browser_sid(self) -> str:
        sid: str = self.claims["sid"]
        return sid

    @property
    def rp_sid(self) -> str:
        """The relying party's own session (its refresh token's sid, the access token's `sid`)."""
        sid: str = jwt_parts(self.tokens["access_token"])[1]["sid"]
        return sid


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


async def sign_in(live: LiveProvider, browser: Browser, party: RelyingParty, subject: str) -> RpSignIn:
    """An authorization at /authorize; the sign-in (as the sign-in page completes it) unless the
    browser's session gives single sign-on; then the code exchanged at /v1/token."""
    verifier = secrets.token_urlsafe(48)
    params = {
        "client_id": party.client_id,
        "redirect_uri": party.redirect_uris[0],
        "response_type": "code",
        "scope": "openid profile offline_access",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
    }
    provider = live.services.oidc
    answer = await live.http.get("/authorize", params=params, headers=browser.headers(live))
    assert answer.status_code in (302, 303), answer.text
    location = answer.headers["location"]
    if answer.status_code == 303:  # to the sign-in page
        binding = answer.cookies[provider.binding_cookie]
        pending = await provider.pending(_query(location)["request"], binding)
        done = await provider.complete(pending, SignedIn(subject, ("pwd",), int(time.time())))
        browser.sso_cookie = done.cookies[provider.session_cookie]
        location = done.url
    back = _query(location)
    assert back["state"] == params["state"]
    form = {
        "grant_type": "authorization_code",
        "code": back["code"],
        "redirect_uri": params["redirect_uri"],
        "code_verifier": verifier,
        "client_id": party.client_id,
    }
    exchanged = await live.http.post("/v1/token", data=form)
    assert exchanged.status_code == 200, exchanged.text
    tokens: dict[str, Any] = exchanged.json()
    return RpSignIn(tokens, jwt_parts(tokens["id_token"])[1])


# Back-channel logout: a relying party's endpoint that records logout tokens -----------------------


@dataclass
class Received:
    path: str
    content_type: str
    logout_token: str


@dataclass
class LogoutReceiver:
    """A relying party's back-channel logout endpoints (`/bc/{name}`): it records every logout token,
    answers with the statuses queued in `answers` (then 200), and while `hold` is clear keeps the
    request waiting (a slow relying party)."""

    received: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    answered: int = 0
    hold: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.hold.set()

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> Response:
            form = parse_qs((await request.body()).decode())
            (token,) = form["logout_token"]
            self.received.append(Received(request.url.path, request.headers["content-type"], token))
            await asyncio.to_thread(self.hold.wait, 30)
            status = self.answers.pop(0) if self.answers else 200
            self.answered += 1
            return Response(status_code=status, headers={"Cache-Control": "no-store"})

        return Starlette(routes=[Route("/bc/{name}", endpoint, methods=["POST"])])


def outcomes() -> dict[str, float]:
    names = ("delivered", "refused", "failed", "dropped")
    return {
        name: REGISTRY.get_sample_value("qrgate_backchannel_logouts_total", {"outcome": name}) or 0.0 for name in names
    }


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `check` (something another thread changes) until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def counted_since(before: dict[str, float]) -> dict[str, float]:
    return {name: value - before[name] for name, value in outcomes().items() if value != before[name]}


async def keyset(live: LiveProvider) -> KeySet:
    return KeySet.import_key_set((await live.http.get("/.well-known/jwks.json")).json())


async def verified_logout_token(live: LiveProvider, token: str) -> dict[str, Any]:
    """The logout token checked as a relying party must (Back-Channel Logout 1.0 2.6), with joserfc
    against the published keys; its claims."""
    decoded = jwt.decode(token, await keyset(live), algorithms=["ES256", "EdDSA"])
    assert decoded.header["typ"] == "logout+jwt"
    claims: dict[str, Any] = decoded.claims
    assert claims["iss"] == live.settings.issuer
    assert claims["events"] == {id_tokens.BACKCHANNEL_EVENT: {}}
    assert "nonce" not in claims
    assert claims["iat"] <= time.time() + 1 < claims["exp"]
    assert len(claims["jti"]) >= 16
    return claims


async def tokens_for(live: LiveProvider, recorder: LogoutReceiver, count: int) -> list[tuple[str, dict[str, Any]]]:
    """Wait for the deliveries, then each (path, claims), sorted by path."""
    await live.services.backchannel.settled()
    assert len(recorder.received) == count, recorder.received
    found = []
    for item in recorder.received:
        assert item.content_type == "application/x-www-form-urlencoded"
        found.append((item.path, await verified_logout_token(live, item.logout_token)))
    return sorted(found, key=lambda pair: pair[0])


async def two_parties(live: LiveProvider, receiver_url: str) -> tuple[RelyingParty, RelyingParty]:
    alpha = await register(
        live,
        "alpha",
        backchannel_logout_uri=receiver_url + "/bc/alpha",
        post_logout_redirect_uris=["https://alpha.example/bye"],
    )
    beta = await register(live, "beta", backchannel_logout_uri=receiver_url + "/bc/beta")
    return alpha, beta


async def alive(live: LiveProvider, sid: str) -> bool:
    return await live.services.tokens.sessions.alive(sid) is not None


async def refresh(live: LiveProvider, signed_in: RpSignIn, client_id: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": signed_in.tokens["refresh_token"], "client_id": client_id}
    return await live.http.post("/v1/token", data=form)


def cleared(response: httpx.Response, cookie: str) -> bool:
    return any(
        value.startswith(f"{cookie}=") and ("max-age=0" in value.lower() or "expires=thu, 01 jan 1970" in value.lower())
        for value in response.headers.get_list("set-cookie")
    )


@contextmanager
def logout_receiver() -> Iterator[tuple[LogoutReceiver, str]]:
    """A `LogoutReceiver` served by uvicorn in a thread: it and its base URL."""
    recorder = LogoutReceiver()
    with FakeService(recorder.app()) as service:
        try:
            yield recorder, service.url
        finally:
            recorder.hold.set()  # let a held request finish before the server stops


# Fixtures (a plugin of the root conftest): a provider running in the test's event loop, and a relying
# party's back-channel receiver.
@pytest.fixture
def receiver() -> Iterator[tuple[LogoutReceiver, str]]:
    with logout_receiver() as receiving:
        yield receiving


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveProvider]:
    async with live_provider(tmp_path) as provider:
        yield provider
