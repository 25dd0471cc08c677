"""RP-initiated logout at /logout (OpenID Connect RP-Initiated Logout 1.0): with a valid
id_token_hint, without one (the confirmation page and its CSRF protection), with hints expired,
forged, foreign or mismatched; and a logout that does not wait for a slow relying party.

The provider runs in the test's own event loop (tests/support/oidc.py): HTTP for every endpoint,
the services' Python API only for the sign-in a person would do at the sign-in page."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from gateway.oidc import id_tokens
from gateway.oidc.logout import read_hint
from gateway.tokens import jws
from gateway.tokens.keys import KeyRing, generate_key
from tests.support.oidc import (
    FORM,
    Browser,
    LiveProvider,
    LogoutReceiver,
    add_person,
    alive,
    cleared,
    counted_since,
    outcomes,
    refresh,
    register,
    sign_in,
    tokens_for,
    two_parties,
    until,
)

pytestmark = pytest.mark.anyio


async def test_logout_with_a_hint_ends_the_browser_session_and_every_relying_party_s(
    live: LiveProvider, receiver: tuple[LogoutReceiver, str]
) -> None:
    recorder, url = receiver
    alpha, beta = await two_parties(live, url)
    subject = await add_person(live)
    browser = Browser()
    at_alpha = await sign_in(live, browser, alpha, subject)
    at_beta = await sign_in(live, browser, beta, subject)  # single sign-on: no second sign-in
    assert at_alpha.browser_sid == at_beta.browser_sid
    assert at_alpha.rp_sid != at_beta.rp_sid
    before = outcomes()

    params = {
        "id_token_hint": at_alpha.tokens["id_token"],
        "post_logout_redirect_uri": "https://alpha.example/bye",
        "state": "s-1",
        "ui_locales": "en",
    }
    answer = await live.http.get("/logout", params=params, headers=browser.headers(live))
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://alpha.example/bye?state=s-1"
    assert answer.headers["cache-control"] == "no-store"
    assert cleared(answer, live.session_cookie)

    for sid in (at_alpha.browser_sid, at_alpha.rp_sid, at_beta.rp_sid):
        assert not await alive(live, sid)
    refused = await refresh(live, at_beta, "beta")
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    again = await live.http.get("/authorize", params={"client_id": "x"}, headers=browser.headers(live))
    assert again.status_code == 400  # (the cookie names nothing any more; an unknown client is an error page)

    delivered = await tokens_for(live, recorder, 2)
    assert [path for path, _ in delivered] == ["/bc/alpha", "/bc/beta"]
    for (_, claims), client_id in zip(delivered, ("alpha", "beta"), strict=True):
        assert claims["aud"] == client_id
        assert claims["sub"] == subject
        assert claims["sid"] == at_alpha.browser_sid  # the sid their id_tokens carried
    assert counted_since(before) == {"delivered": 2}


async def test_logout_without_a_hint_is_confirmed_by_the_person_first(live: LiveProvider) -> None:
    alpha = await register(live, "alpha", post_logout_redirect_uris=["https://alpha.example/bye"])
    subject = await add_person(live)
    browser = Browser()
    signed_in = await sign_in(live, browser, alpha, subject)
    params = {"client_id": "alpha", "post_logout_redirect_uri": "https://alpha.example/bye", "state": "s-2"}

    asked = await live.http.get("/logout", params=params, headers=browser.headers(live))
    assert asked.status_code == 200
    assert asked.headers["content-type"].startswith("text/html")
    assert asked.headers["cache-control"] == "no-store"
    policy = asked.headers["content-security-policy"]
    assert "form-action 'self' https://alpha.example;" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert asked.headers["x-frame-options"] == "DENY"
    confirm_cookie = live.services.logouts.confirm_cookie
    set_cookie = next(v for v in asked.headers.get_list("set-cookie") if v.startswith(confirm_cookie + "="))
    assert "samesite=strict" in set_cookie.lower()
    assert "httponly" in set_cookie.lower()
    binding = asked.cookies[confirm_cookie]
    found = re.search(r'name="confirm" value="([A-Za-z0-9_-]+)"', asked.text)
    assert found is not None
    request_id = found.group(1)
    assert await alive(live, signed_in.browser_sid)  # nothing ended by merely asking

    # A post without this browser's binding cookie (a forged one) is refused and burns nothing.
    forged = await live.http.post("/logout", data={"confirm": request_id}, headers=browser.headers(live))
    assert forged.status_code == 400
    assert "Sign-out refused" in forged.text
    assert await alive(live, signed_in.browser_sid)

    confirmed = await live.http.post(
        "/logout",
        content=f"confirm={request_id}",
        headers={**FORM, **browser.headers(live, **{confirm_cookie: binding})},
    )
    assert confirmed.status_code == 303
    assert confirmed.headers["location"] == "https://alpha.example/bye?state=s-2"
    assert cleared(confirmed, live.session_cookie)
    assert cleared(confirmed, confirm_cookie)
    assert not await alive(live, signed_in.browser_sid)
    assert not await alive(live, signed_in.rp_sid)

    replayed = await live.http.post(
        "/logout", data={"confirm": request_id}, headers=browser.headers(live, **{confirm_cookie: binding})
    )
    assert replayed.status_code == 400


async def test_hints_expired_forged_foreign_or_mismatched(live: LiveProvider) -> None:
    alpha = await register(live, "alpha", post_logout_redirect_uris=["https://alpha.example/bye"])
    subject = await add_person(live)
    browser = Browser()
    signed_in = await sign_in(live, browser, alpha, subject)
    ring = live.services.oidc.ring

    def hint(**claims: Any) -> str:
        return id_tokens.id_token(
            ring,
            issuer=live.settings.issuer,
            subject=subject,
            client_id="alpha",
            session_id=signed_in.browser_sid,
            auth_time=int(time.time()) - 7200,
            amr=["pwd"],
            nonce="",
            access_token="a",
            ttl=600,
            **claims,
        )

    expired = hint(now=time.time() - 3600)
    assert read_hint(expired, ring, live.settings.issuer) is not None
    other = KeyRing([generate_key("ES256")])
    key = other.signing_key()
    forged = jws.sign({"alg": key.alg, "typ": "JWT", "kid": key.kid}, jwt_claims(signed_in.claims), key)
    for not_a_hint in (forged, signed_in.tokens["access_token"], "e30.e30.e30", "x" * 9000):
        assert read_hint(not_a_hint, ring, live.settings.issuer) is None
    assert read_hint(hint(extra={"iss": "https://elsewhere.example"}), ring, live.settings.issuer) is None

    # A forged or foreign hint proves nothing: the person is asked.
    for not_a_hint in (forged, signed_in.tokens["access_token"]):
        asked = await live.http.get("/logout", params={"id_token_hint": not_a_hint}, headers=browser.headers(live))
        assert asked.status_code == 200
        assert 'name="confirm"' in asked.text
    # A client_id other than the hint's audience is an error, and nothing ends.
    mismatched = await live.http.get(
        "/logout", params={"id_token_hint": expired, "client_id": "beta"}, headers=browser.headers(live)
    )
    assert mismatched.status_code == 400
    assert "client_id is not the audience" in mismatched.text
    assert await alive(live, signed_in.browser_sid)

    # An expired hint from the relying party's own origin (a cross-site POST: no session cookie is
    # sent) ends the session its sid names; an unregistered post-logout URI gets the signed-out page.
    answer = await live.http.post(
        "/logout", data={"id_token_hint": expired, "post_logout_redirect_uri": "https://evil.example/", "state": "s"}
    )
    assert answer.status_code == 200
    assert "Signed out" in answer.text
    assert "evil.example" not in answer.text
    assert not await alive(live, signed_in.browser_sid)
    assert not await alive(live, signed_in.rp_sid)

    # Nothing to end, nobody named: the signed-out page; a repeated parameter: the error page.
    nothing = await live.http.get("/logout", params={"ui_locales": "en"})
    assert nothing.status_code == 200
    assert '<html lang="en">' in nothing.text
    repeated = await live.http.get("/logout?state=a&state=b")
    assert repeated.status_code == 400


def jwt_claims(claims: dict[str, Any]) -> dict[str, Any]:
    return {**claims, "exp": int(time.time()) + 600}


async def test_logout_does_not_wait_for_a_slow_relying_party(
    live: LiveProvider, receiver: tuple[LogoutReceiver, str]
) -> None:
    recorder, url = receiver
    alpha, beta = await two_parties(live, url)
    subject = await add_person(live)
    browser = Browser()
    at_alpha = await sign_in(live, browser, alpha, subject)
    await sign_in(live, browser, beta, subject)
    recorder.hold.clear()  # the relying party takes its time
    started = time.monotonic()
    params = {"id_token_hint": at_alpha.tokens["id_token"], "post_logout_redirect_uri": "https://alpha.example/bye"}
    answer = await live.http.get("/logout", params=params, headers=browser.headers(live))
    elapsed = time.monotonic() - started
    assert answer.status_code == 302
    await until(lambda: len(recorder.received) == 2)  # the tokens are on their way...
    assert recorder.answered == 0  # ...and not answered yet, while the browser is back already
    assert elapsed < 2.0
    before = outcomes()
    recorder.hold.set()
    await live.services.backchannel.settled()
    assert recorder.answered == 2
    assert counted_since(before) == {"delivered": 2}


async def test_an_unknown_signing_key_or_issuer_is_no_hint() -> None:
    ring = KeyRing([generate_key("ES256")])
    key = ECKey.generate_key("P-256", auto_kid=True)
    assert read_hint(jwt.encode({"alg": "ES256", "typ": "JWT"}, {"sub": "a"}, key), ring, "https://i") is None
