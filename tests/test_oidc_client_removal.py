"""`qrgate admin client remove`: the removed relying party's sessions end (its refresh tokens and
access tokens stop working), its outstanding codes stop working, and nothing else changes: the browser
session and the other parties' sessions live on. No back-channel logout token goes to the removed
party (it is gone).

The provider runs in the test's event loop over a private Redis; the command runs in-process
(`cli.main`, on a thread of its own) against the same database and Redis, as an operator's would."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway import cli
from gateway.oidc.requests import s256
from gateway.tokens.session_ends import FEED, sid_hash
from tests.support.oidc import (
    Browser,
    LiveProvider,
    LogoutReceiver,
    add_person,
    alive,
    live_provider,
    logout_receiver,
    refresh,
    register,
    sign_in,
)
from tests.support.redis_procs import RedisServer

pytestmark = pytest.mark.anyio


def remove_with_the_command(live: LiveProvider, client_id: str, capsys: pytest.CaptureFixture[str]) -> str:
    env = {
        "QRGATE_PUBLIC_URL": live.settings.issuer,
        "QRGATE_DATABASE_URL": live.settings.database_url,
        "QRGATE_KEYS_FILE": live.settings.keys_file,
        "QRGATE_REDIS_URL": live.settings.redis_url,
        "QRGATE_OIDC_CLIENTS_REFRESH": str(live.settings.oidc_clients_refresh),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert cli.main(["admin", "client", "remove", client_id]) == 0
    return capsys.readouterr().out


async def test_removing_a_client_ends_its_sessions_and_codes(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with live_provider(tmp_path, redis_url=redis_server.url, oidc_clients_refresh=0.5) as live:
        with logout_receiver() as (recorder, url):
            await removal(live, recorder, url, capsys)


async def removal(live: LiveProvider, recorder: LogoutReceiver, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    alpha = await register(live, "alpha", backchannel_logout_uri=url + "/bc/alpha")
    beta = await register(live, "beta", backchannel_logout_uri=url + "/bc/beta")
    subject = await add_person(live)
    browser = Browser()
    first = await sign_in(live, browser, alpha, subject)
    second = await sign_in(live, browser, alpha, subject)  # a second session at alpha (single sign-on)
    at_beta = await sign_in(live, browser, beta, subject)
    other_person = await sign_in(live, Browser(), alpha, await add_person(live))

    # A code issued to alpha and not yet exchanged (single sign-on answers /authorize with it at once).
    verifier = secrets.token_urlsafe(48)
    params = {
        "client_id": "alpha",
        "redirect_uri": alpha.redirect_uris[0],
        "response_type": "code",
        "scope": "openid",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "state": "s",
    }
    answer = await live.http.get("/authorize", params=params, headers=browser.headers(live))
    assert answer.status_code == 302
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]

    output = await asyncio.to_thread(remove_with_the_command, live, "alpha", capsys)
    assert output.strip() == "client alpha removed; 3 session(s) ended"

    for signed_in in (first, second, other_person):
        assert not await alive(live, signed_in.rp_sid)
        refused = await refresh(live, signed_in, "alpha")
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_client"
        userinfo = await live.http.get(
            "/userinfo", headers={"Authorization": f"Bearer {signed_in.tokens['access_token']}"}
        )
        assert userinfo.status_code == 401  # its access token died with its session
    # ... and resource servers hear of it through the session-end feed, as after a logout.
    published, _ = await live.services.store.feed_read(FEED, "", 100)
    ended = {entry.split()[0] for _, entry in published}
    assert {sid_hash(signed_in.rp_sid) for signed_in in (first, second, other_person)} <= ended
    exchanged = await live.http.post(
        "/v1/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": alpha.redirect_uris[0],
            "code_verifier": verifier,
            "client_id": "alpha",
        },
    )
    assert exchanged.status_code == 401
    assert exchanged.json()["error"] == "invalid_client"
    again = await live.http.get("/authorize", params=params, headers=browser.headers(live))
    assert again.status_code == 400  # an error page, never a redirect to a client that is gone
    assert "location" not in again.headers

    # Nothing else ended: the browser session, beta's session (its refresh token works).
    assert await alive(live, first.browser_sid)
    assert await alive(live, at_beta.rp_sid)
    assert (await refresh(live, at_beta, "beta")).status_code == 200
    # And the removed party got no logout tokens (nor did beta, whose session lives).
    await live.services.backchannel.settled()
    assert recorder.received == []


async def test_a_removed_clients_refresh_token_dies_even_when_its_session_was_not_ended(live: LiveProvider) -> None:
    """What a deployment without a shared store gets (the command cannot reach the gateway's memory),
    and a gateway that reads the removal before the command ends the sessions."""
    party = await register(live, "gamma")
    signed_in = await sign_in(live, Browser(), party, await add_person(live))
    assert await live.services.oidc.parties.remove("gamma")
    refused = await refresh(live, signed_in, "gamma")
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    own = await live.http.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": "x" * 60, "client_id": "mobile-app"}
    )
    assert own.json()["error"] == "invalid_grant"  # the gateway's own clients are not relying parties
