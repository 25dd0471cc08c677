"""The OpenID provider's contract in protocols/ against real answers and real tokens: /authorize,
/par, the authorization_code grant at /v1/token, /userinfo, /logout, discovery, and the id_tokens and
logout tokens issued, each held against openapi.yaml (status, media type, headers, body) and its
schema file (tests/test_protocols.py style).

The provider runs in the test's own event loop (tests/support/oidc.py); the one step a person does
at the sign-in page goes through the services' Python API."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from gateway.oidc.clients import new_party
from gateway.oidc.id_tokens import half_hash
from gateway.oidc.provider import SignedIn
from gateway.oidc.requests import s256
from tests.conftest import new_identity
from tests.support.oidc import (
    FORM,
    Browser,
    LiveProvider,
    LogoutReceiver,
    register,
    sign_in,
)
from tests.support.schemas import assert_valid, errors, jwt_parts, openapi
from tests.test_protocols import assert_documented, assert_problem

pytestmark = pytest.mark.anyio
CRM_SECRET = "crm-" + "q" * 40


def query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


async def person(live: LiveProvider) -> dict[str, str]:
    from gateway.cli import add_person_record

    identity = new_identity()
    identity["id"] = await add_person_record(live.settings, **identity)
    return identity


async def verified(live: LiveProvider, token: str, typ: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a token the provider signed, checked with joserfc against its JWKS."""
    keys = KeySet.import_key_set((await live.http.get("/.well-known/jwks.json")).json())
    decoded = jwt.decode(token, keys, algorithms=["ES256", "EdDSA"])
    assert decoded.header["typ"] == typ
    assert decoded.header["alg"] == live.settings.signing_alg
    return dict(decoded.header), dict(decoded.claims)


def authorization(client_id: str, redirect_uri: str, verifier: str, **more: str) -> dict[str, str]:
    return {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": "openid profile phone offline_access",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "state": "st-" + secrets.token_urlsafe(6),
        "nonce": "n-" + secrets.token_urlsafe(6),
        **more,
    }


async def test_the_code_flow_userinfo_and_the_id_token_as_documented(live: LiveProvider) -> None:
    portal = new_party(
        "portal",
        name="Portal",
        redirect_uris=["https://portal.example/cb"],
        scopes=["openid", "profile", "phone", "offline_access"],
    )
    await live.services.oidc.parties.add(portal)
    someone = await person(live)
    provider = live.services.oidc

    unknown = await live.http.get("/authorize", params={"client_id": "nobody", "redirect_uri": "https://x.example/"})
    assert unknown.status_code == 400
    assert_documented(unknown, "GET", "/authorize")
    assert "invalid_client" in unknown.text
    assert "x.example" not in unknown.headers.get("location", "")

    verifier = secrets.token_urlsafe(48)
    params = authorization("portal", "https://portal.example/cb", verifier)
    no_pkce = await live.http.get("/authorize", params={**params, "code_challenge_method": "plain"})
    assert no_pkce.status_code == 302
    assert_documented(no_pkce, "GET", "/authorize")
    refused = query(no_pkce.headers["location"])
    assert refused["error"] == "invalid_request"
    assert refused["state"] == params["state"]
    assert refused["iss"] == live.settings.issuer

    to_sign_in = await live.http.post("/authorize", data=params)
    assert to_sign_in.status_code == 303
    assert_documented(to_sign_in, "POST", "/authorize")
    assert to_sign_in.headers["location"].startswith(live.settings.issuer + "/signin?request=")
    pending = await provider.pending(
        query(to_sign_in.headers["location"])["request"], to_sign_in.cookies[provider.binding_cookie]
    )
    done = await provider.complete(pending, SignedIn(someone["id"], ("qr",), int(time.time()) - 5))
    back = query(done.url)
    assert back["iss"] == live.settings.issuer
    assert back["state"] == params["state"]

    form = {
        "grant_type": "authorization_code",
        "code": back["code"],
        "redirect_uri": "https://portal.example/cb",
        "code_verifier": verifier,
        "client_id": "portal",
    }
    exchanged = await live.http.post("/v1/token", data=form)
    assert exchanged.status_code == 200, exchanged.text
    answer = assert_documented(exchanged, "POST", "/v1/token")
    assert_valid("oidc-token-response.json", answer)
    header, claims = await verified(live, answer["id_token"], "JWT")
    assert_valid("id-token-claims.json", claims)
    assert header["kid"]
    assert claims["aud"] == claims["azp"] == "portal"
    assert claims["sub"] == someone["id"]
    assert claims["nonce"] == params["nonce"]
    assert claims["acr"] == "urn:qrgate:acr:app-confirmed"
    assert claims["amr"] == ["qr"]
    assert claims["at_hash"] == half_hash(answer["access_token"], header["alg"])
    assert claims["exp"] - claims["iat"] == live.settings.oidc_id_token_ttl
    assert_valid("access-token-claims.json", jwt_parts(answer["access_token"])[1])

    bearer = {"Authorization": f"Bearer {answer['access_token']}"}
    for method in ("GET", "POST"):
        info = await live.http.request(method, "/userinfo", headers=bearer)
        assert info.status_code == 200, info.text
        body = assert_documented(info, method, "/userinfo")
        assert_valid("userinfo.json", body)
        assert body == {
            "sub": someone["id"],
            "name": someone["name"],
            "preferred_username": someone["login_name"],
            "phone_number": "+86" + someone["phone"],
            "phone_number_verified": True,
        }
    anonymous = await live.http.get("/userinfo")
    assert_problem(anonymous, 401, "unauthorized", operation=("GET", "/userinfo"))
    login = {"identifier": someone["login_name"], "password": someone["password"], "client_id": "web"}
    own = (await live.http.post("/v1/login/password", json=login)).json()["access_token"]
    not_oidc = await live.http.get("/userinfo", headers={"Authorization": f"Bearer {own}"})
    assert_problem(not_oidc, 403, "insufficient_scope", operation=("GET", "/userinfo"))

    again = await live.http.post("/v1/token", data=form)  # the code was used: what it issued is revoked
    assert_problem(again, 400, "invalid_grant", error="invalid_grant", operation=("POST", "/v1/token"))
    ended = await live.http.get("/userinfo", headers=bearer)
    assert_problem(ended, 401, "session_ended", operation=("GET", "/userinfo"))


async def test_pushed_requests_and_confidential_clients_as_documented(live: LiveProvider) -> None:
    crm = new_party("crm", name="CRM", redirect_uris=["https://crm.example/cb"], secret=CRM_SECRET)
    await live.services.oidc.parties.add(crm)
    basic = httpx.BasicAuth("crm", CRM_SECRET)
    verifier = secrets.token_urlsafe(48)
    params = authorization("crm", "https://crm.example/cb", verifier, scope="openid profile")

    pushed = await live.http.post("/par", data=params, auth=basic)
    assert pushed.status_code == 201, pushed.text
    body = assert_documented(pushed, "POST", "/par")
    assert body["expires_in"] == live.settings.oidc_par_ttl
    wrong = await live.http.post("/par", data=params, auth=httpx.BasicAuth("crm", "x" * 40))
    assert_problem(wrong, 401, "invalid_client", error="invalid_client", operation=("POST", "/par"))
    too_much = await live.http.post("/par", data={**params, "scope": "openid unit"}, auth=basic)
    assert_problem(too_much, 400, "invalid_scope", error="invalid_scope", operation=("POST", "/par"))
    not_a_form = await live.http.post("/par", json=params, auth=basic)
    assert_problem(not_a_form, 415, "unsupported_media_type", operation=("POST", "/par"))

    by_reference = {"client_id": "crm", "request_uri": body["request_uri"]}
    to_sign_in = await live.http.get("/authorize", params=by_reference)
    assert to_sign_in.status_code == 303
    assert_documented(to_sign_in, "GET", "/authorize")
    used = await live.http.get("/authorize", params=by_reference)
    assert used.status_code == 400
    assert_documented(used, "GET", "/authorize")
    assert "invalid_request_uri" in used.text

    provider = live.services.oidc
    pending = await provider.pending(
        query(to_sign_in.headers["location"])["request"], to_sign_in.cookies[provider.binding_cookie]
    )
    done = await provider.complete(pending, SignedIn("p_someone", ("pwd",), int(time.time())))
    form = {
        "grant_type": "authorization_code",
        "code": query(done.url)["code"],
        "redirect_uri": "https://crm.example/cb",
        "code_verifier": verifier,
    }
    anonymous = await live.http.post("/v1/token", data={**form, "client_id": "crm"})
    assert_problem(anonymous, 401, "invalid_client", error="invalid_client", operation=("POST", "/v1/token"))
    exchanged = await live.http.post("/v1/token", data=form, auth=basic)
    answer = assert_documented(exchanged, "POST", "/v1/token")
    assert "refresh_token" not in answer  # no offline_access asked
    assert jwt_parts(answer["id_token"])[1]["acr"] == "urn:qrgate:acr:password"


async def test_logout_answers_and_the_logout_token_as_documented(
    live: LiveProvider, receiver: tuple[LogoutReceiver, str]
) -> None:
    recorder, url = receiver
    portal = await register(
        live, "portal", backchannel_logout_uri=url + "/bc/portal", post_logout_redirect_uris=["https://portal.example/"]
    )
    browser = Browser()
    signed_in = await sign_in(live, browser, portal, "p_someone")

    asked = await live.http.get("/logout", headers=browser.headers(live))
    assert asked.status_code == 200
    assert_documented(asked, "GET", "/logout")
    stale = await live.http.post("/logout", data={"confirm": "not-a-real-one"}, headers=browser.headers(live))
    assert stale.status_code == 400
    assert_documented(stale, "POST", "/logout")
    found = re.search(r'name="confirm" value="([^"]+)"', asked.text)
    assert found is not None
    confirm_cookie = live.services.logouts.confirm_cookie
    confirmed = await live.http.post(
        "/logout",
        content=f"confirm={found.group(1)}",
        headers={**FORM, **browser.headers(live, **{confirm_cookie: asked.cookies[confirm_cookie]})},
    )
    assert confirmed.status_code == 200  # no relying party named: the signed-out page
    assert_documented(confirmed, "POST", "/logout")

    await live.services.backchannel.settled()
    (delivered,) = recorder.received
    _, claims = await verified(live, delivered.logout_token, "logout+jwt")
    assert_valid("logout-token-claims.json", claims)
    assert claims["sid"] == signed_in.browser_sid
    assert claims["aud"] == "portal"

    browser = Browser()
    signed_in = await sign_in(live, browser, portal, "p_someone")
    hinted = {
        "id_token_hint": signed_in.tokens["id_token"],
        "post_logout_redirect_uri": "https://portal.example/",
        "state": "bye",
    }
    redirected = await live.http.get("/logout", params=hinted, headers=browser.headers(live))
    assert redirected.status_code == 302
    assert_documented(redirected, "GET", "/logout")
    assert redirected.headers["location"] == "https://portal.example/?state=bye"
    by_post = await live.http.post("/logout", data=hinted)
    assert by_post.status_code == 303
    assert_documented(by_post, "POST", "/logout")


async def test_every_endpoint_discovery_names_is_documented(live: LiveProvider) -> None:
    metadata = (await live.http.get("/.well-known/openid-configuration")).json()
    assert_valid("openid-configuration.json", metadata)
    paths = openapi()["paths"]
    for name, value in metadata.items():
        if name.endswith("_endpoint") or name == "jwks_uri":
            assert value.startswith(live.settings.issuer)
            assert value.removeprefix(live.settings.issuer) in paths, name


def test_the_schemas_reject_what_the_provider_never_issues() -> None:
    claims = {
        "iss": "https://login.example",
        "sub": "p_x",
        "aud": "portal",
        "azp": "portal",
        "exp": 2,
        "iat": 1,
        "auth_time": 1,
        "amr": ["pwd"],
        "acr": "urn:qrgate:acr:password",
        "sid": "s" * 22,
        "at_hash": "h" * 22,
    }
    assert not errors("id-token-claims.json", claims)
    assert errors("id-token-claims.json", {k: v for k, v in claims.items() if k != "sid"})
    assert errors("id-token-claims.json", {**claims, "sub": "11010519900101001X"})
    assert errors("id-token-claims.json", {**claims, "acr": "0"})
    logout = {
        "iss": "https://login.example",
        "sub": "p_x",
        "aud": "portal",
        "iat": 1,
        "exp": 121,
        "jti": "j" * 22,
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        "sid": "s" * 22,
    }
    assert not errors("logout-token-claims.json", logout)
    assert errors("logout-token-claims.json", {**logout, "nonce": "n"})  # never a nonce (2.4)
    assert errors("logout-token-claims.json", {**logout, "events": {}})
    assert errors("logout-token-claims.json", {k: v for k, v in logout.items() if k != "sid"})
    token = "a.b.c"
    answer = {"access_token": token, "token_type": "Bearer", "expires_in": 600, "scope": "openid", "id_token": token}
    assert not errors("oidc-token-response.json", answer)
    assert errors("oidc-token-response.json", {k: v for k, v in answer.items() if k != "id_token"})
    assert errors("oidc-token-response.json", {**answer, "scope": "profile"})
    assert errors("userinfo.json", {"sub": "p_x", "id_number": "11010519900101001X"})
    assert errors("userinfo.json", {"sub": "p_x", "phone_number": "+8613912345678"})  # verified is always said
    assert errors("par-response.json", {"request_uri": "https://x/", "expires_in": 90})
