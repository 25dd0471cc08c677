"""An OpenID Connect logout reaches the units service within 5 s: the browser session and every
relying party's session made from it are published on the session-end feed, and a separate units
server (`create_standalone_app` under uvicorn on its own port, trusting the provider over HTTP)
refuses their tokens. The provider runs in the test's event loop (tests/support/oidc.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from gateway.oidc.provider import BrowserSession
from gateway.settings import Settings
from gateway.units.app import create_standalone_app
from tests.support.gateway_server import AppServer
from tests.support.oidc import Browser, LiveProvider, add_person, register, sign_in

pytestmark = pytest.mark.anyio
LIMIT = 5.0


def units_settings(live: LiveProvider, tmp: Path) -> Settings:
    return Settings(
        public_url="http://units.test",
        database_url=live.settings.database_url,
        database_auto_migrate=False,
        keys_file=str(tmp / "unused-gateway-keys.json"),
        units_keys_file=str(tmp / "units-keys.json"),
        units_gateway_url=live.base_url,
        units_gateway_issuer=live.settings.issuer,
    )


async def test_an_oidc_logout_reaches_a_separate_units_server(live: LiveProvider, tmp_path: Path) -> None:
    alpha = await register(live, "alpha", post_logout_redirect_uris=["https://alpha.example/bye"])
    subject = await add_person(live)
    browser = Browser()
    signed_in = await sign_in(live, browser, alpha, subject)
    # The browser session's own token, as the sign-in page's unit step calls the units service with.
    session = BrowserSession(signed_in.browser_sid, subject, int(time.time()), ("pwd",))
    step_token = live.services.oidc.unit_step_token(session)
    party_token = signed_in.tokens["access_token"]

    with AppServer(create_standalone_app(units_settings(live, tmp_path))) as base:
        async with httpx.AsyncClient(base_url=base + "/units", timeout=20) as units:

            async def listed(token: str) -> httpx.Response:
                return await units.get("/v1/units", headers={"Authorization": f"Bearer {token}"})

            assert (await listed(step_token)).status_code == 200
            # The relying party's token lives, but it has no units scope (its scope is openid ...).
            assert (await listed(party_token)).json()["code"] == "insufficient_scope"

            answer = await live.http.get(
                "/logout", params={"id_token_hint": signed_in.tokens["id_token"]}, headers=browser.headers(live)
            )
            assert answer.status_code in (200, 302, 303), answer.text
            started = time.monotonic()
            pending = {"browser session": step_token, "relying party session": party_token}
            while pending:
                for what, token in list(pending.items()):
                    refused = await listed(token)
                    if refused.status_code == 401:
                        assert refused.json()["code"] == "session_ended"
                        del pending[what]
                assert time.monotonic() - started < LIMIT, f"still accepted after {LIMIT} s: {sorted(pending)}"
                await asyncio.sleep(0.05)
            entered = await units.post(
                "/v1/units/91110000000000001X/enter", headers={"Authorization": f"Bearer {step_token}"}
            )
            assert entered.status_code == 401
            assert entered.json()["code"] == "session_ended"
    # The provider runs without its server's shutdown steps here: answer the follower's last long-poll
    # now (as `qrgate serve` does on SIGTERM), so the provider stops at once.
    live.services.draining.close_connections()
