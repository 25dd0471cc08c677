"""The OpenID Connect provider's protocol, in process: the gateway app over its real services (memory
store, SQLite), driven through HTTP with httpx, the browser's sign-in played through the provider's
Python API (the sign-in page has tests of its own, in Chromium). Tokens are checked by Authlib, a real
relying-party library: discovery metadata, id_token signature, nonce and at_hash."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.jwk import KeySet

from gateway.app import Services, create_app
from gateway.oidc.clients import new_party
from gateway.oidc.provider import SignedIn
from gateway.oidc.requests import s256
from gateway.rules import IdType
from tests.conftest import new_identity
from tests.support.dpop import DpopKey
from tests.support.gateway_server import make_settings

pytestmark = pytest.mark.anyio
ISSUER = "https://op.test"  # https: Authlib, like the specs, refuses any other issuer
REDIRECT = "http://127.0.0.1:7000/callback"
SECRET = "s" * 40


@dataclass
class Provider:
    services: Services
    http: httpx.AsyncClient
    person_id: str

    @property
    def oidc(self) -> Any:
        return self.services.oidc


@pytest.fixture
async def op(tmp_path: Path) -> AsyncIterator[Provider]:
    settings = make_settings(tmp_path, 0, public_url=ISSUER, units_mount=False, oidc_clients_refresh=0)
    services = Services.create(settings)
    async with services.running():
        parties = services.oidc.parties
        await parties.add(
            new_party(
                "payroll", name="薪酬系统", redirect_uris=[REDIRECT], scopes=["openid", "profile", "offline_access"]
            )
        )
        await parties.add(
            new_party("ledger", name="账簿", redirect_uris=[REDIRECT], secret=SECRET, scopes=["openid", "phone"])
        )
        await parties.add(
            new_party("classic", name="旧系统", redirect_uris=[REDIRECT], scopes=["openid"], id_token_alg="RS256")
        )
        identity = new_identity()
        person_id = await services.directory.add(
            id_type=IdType.RESIDENT_ID,
            id_number=identity["id_number"],
            name="张三",
            login_name=identity["login_name"],
            phone=identity["phone"],
            password_hash=services.hashing.hash_sync(identity["password"]),
        )
        transport = httpx.ASGITransport(app=create_app(services=services))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            yield Provider(services, http, person_id)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def authorize_params(client_id: str = "payroll", **extra: str) -> dict[str, str]:
    return {
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid profile offline_access" if client_id == "payroll" else "openid phone",
        "state": "st-" + secrets.token_hex(4),
        "nonce": "n-" + secrets.token_hex(4),
        "code_challenge_method": "S256",
        **extra,
    }


def query_of(response: httpx.Response) -> dict[str, str]:
    location = response.headers["location"]
    assert location.startswith(REDIRECT), location
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


async def sign_in(op: Provider, params: dict[str, str], amr: tuple[str, ...] = ("qr",)) -> dict[str, str]:
    """/authorize, then the person signs in (as the sign-in page would; not when the browser is signed
    in already), then the redirect's query."""
    answer = await op.http.get("/authorize", params=params)
    if answer.status_code == 302:
        return query_of(answer)
    assert answer.status_code == 303, answer.text
    request_id = parse_qs(urlsplit(answer.headers["location"]).query)["request"][0]
    binding = answer.cookies[op.oidc.binding_cookie]
    pending = await op.oidc.pending(request_id, binding)
    done = await op.oidc.complete(pending, SignedIn(op.person_id, amr, int(time.time()), "张*"))
    for name, value in done.cookies.items():
        if value:
            op.http.cookies.set(name, value)
    location = done.url
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


async def exchange(op: Provider, code: str, verifier: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    return await op.http.post("/v1/token", data={**form, **extra})


async def refresh(op: Provider, refresh_token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "payroll"}
    return await op.http.post("/v1/token", data=form)


async def keys(op: Provider) -> KeySet:
    return KeySet.import_key_set((await op.http.get("/.well-known/jwks.json")).json())


# Discovery ------------------------------------------------------------------------------------------


async def test_discovery_is_accepted_by_an_off_the_shelf_client_library(op: Provider) -> None:
    document = (await op.http.get("/.well-known/openid-configuration")).json()
    OpenIDProviderMetadata(document).validate()  # Authlib's checks of Discovery 1.0 and RFC 8414
    assert document["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert document["response_types_supported"] == ["code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_endpoint"] == ISSUER + "/authorize"
    assert document["pushed_authorization_request_endpoint"] == ISSUER + "/par"
    assert document["authorization_response_iss_parameter_supported"] is True


# The authorization endpoint ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "nobody"},
        {"redirect_uri": "https://evil.example/callback"},
        {"redirect_uri": REDIRECT + "/more"},
        {"redirect_uri": REDIRECT + "?x=1"},
    ],
)
async def test_an_unknown_client_or_redirect_uri_is_an_error_page_never_a_redirect(
    op: Provider, change: dict[str, str]
) -> None:
    answer = await op.http.get("/authorize", params={**authorize_params(code_challenge=pkce()[1]), **change})
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["x-frame-options"] == "DENY"


async def test_a_repeated_parameter_is_refused_on_a_page(op: Provider) -> None:
    query = urlencode(authorize_params(code_challenge=pkce()[1])) + "&state=again"
    answer = await op.http.get("/authorize?" + query)
    assert (answer.status_code, "location" in answer.headers) == (400, False)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"scope": "profile"}, "invalid_scope"),
        ({"scope": "openid phone"}, "invalid_scope"),  # not registered for payroll
        ({"prompt": "none"}, "login_required"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
        ({"max_age": "-1"}, "invalid_request"),
    ],
)
async def test_other_errors_go_back_to_the_client_with_state_and_iss(
    op: Provider, change: dict[str, str], error: str
) -> None:
    params = {**authorize_params(code_challenge=pkce()[1]), **change}
    answer = await op.http.get("/authorize", params=params)
    assert answer.status_code == 302
    query = query_of(answer)
    assert (query["error"], query["state"], query["iss"]) == (error, params["state"], ISSUER)
    assert "code" not in query


async def test_without_pkce_nothing_is_issued(op: Provider) -> None:
    params = authorize_params()
    assert "code_challenge" not in params
    query = query_of(await op.http.get("/authorize", params=params))
    assert query["error"] == "invalid_request"


# The code flow, checked by Authlib ------------------------------------------------------------------


async def test_code_flow_id_token_userinfo_and_refresh(op: Provider) -> None:
    verifier, challenge = pkce()
    params = authorize_params(code_challenge=challenge)
    query = await sign_in(op, params)
    assert (query["state"], query["iss"]) == (params["state"], ISSUER)
    answer = await exchange(op, query["code"], verifier, client_id="payroll")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"].startswith("no-store")
    tokens = answer.json()
    assert {"access_token", "id_token", "refresh_token", "expires_in", "token_type", "scope"} <= set(tokens)
    decoded = jwt.decode(tokens["id_token"], await keys(op), algorithms=["ES256"])
    claims = CodeIDToken(decoded.claims, decoded.header, {"nonce": {"value": params["nonce"]}}, {})
    claims.params = {"nonce": params["nonce"], "client_id": "payroll", "access_token": tokens["access_token"]}
    claims.validate(leeway=5)  # Authlib: iss, aud, exp, iat, auth_time, nonce, at_hash
    assert claims["at_hash"]
    assert claims["amr"] == ["qr"]
    assert claims["acr"] == "urn:qrgate:acr:app-confirmed"
    assert decoded.header["typ"] == "JWT"
    assert "name" not in claims  # personal data only from UserInfo
    assert "phone_number" not in claims
    info = await op.http.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 200, info.text
    assert info.json() == {
        "sub": claims["sub"],
        "name": "张三",
        "preferred_username": info.json()["preferred_username"],
    }
    posted = await op.http.post("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert posted.json() == info.json()
    refreshed = await op.http.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "payroll"},
    )
    assert refreshed.status_code == 200, refreshed.text
    access = jwt.decode(refreshed.json()["access_token"], await keys(op), algorithms=["ES256"]).claims
    assert (access["scope"], access["auth_time"], access["client_id"]) == (
        params["scope"],
        claims["auth_time"],
        "payroll",
    )


async def test_single_sign_on_keeps_auth_time_and_amr_and_prompt_login_asks_again(op: Provider) -> None:
    verifier, challenge = pkce()
    first = await sign_in(op, authorize_params(code_challenge=challenge), amr=("pwd",))
    first_tokens = (await exchange(op, first["code"], verifier, client_id="payroll")).json()
    first_claims = jwt.decode(first_tokens["id_token"], await keys(op), algorithms=["ES256"]).claims
    await asyncio.sleep(1.1)
    verifier2, challenge2 = pkce()
    again = await op.http.get("/authorize", params=authorize_params("ledger", code_challenge=challenge2))
    assert again.status_code == 302  # straight back with a code: no sign-in
    second = query_of(again)
    tokens = await exchange(op, second["code"], verifier2, client_id="ledger", client_secret=SECRET)
    claims = jwt.decode(tokens.json()["id_token"], await keys(op), algorithms=["ES256"]).claims
    assert (claims["auth_time"], claims["amr"], claims["sid"]) == (
        first_claims["auth_time"],
        ["pwd"],
        first_claims["sid"],
    )
    assert claims["aud"] == "ledger"
    login = await op.http.get("/authorize", params=authorize_params(code_challenge=challenge, prompt="login"))
    assert login.status_code == 303
    assert "/signin?request=" in login.headers["location"]
    fresh = await op.http.get("/authorize", params=authorize_params(code_challenge=challenge, max_age="0"))
    assert fresh.status_code == 303


# The token endpoint's refusals ------------------------------------------------------------------------


async def test_wrong_verifier_other_client_and_confidential_without_secret_get_nothing(op: Provider) -> None:
    verifier, challenge = pkce()
    query = await sign_in(op, authorize_params(code_challenge=challenge))
    wrong = await exchange(op, query["code"], pkce()[0], client_id="payroll")
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    assert "access_token" not in wrong.json()
    verifier, challenge = pkce()
    other = await sign_in(op, authorize_params(code_challenge=challenge))
    stolen = await exchange(op, other["code"], verifier, client_id="ledger", client_secret=SECRET)
    assert (stolen.status_code, stolen.json()["error"]) == (400, "invalid_grant")
    verifier, challenge = pkce()
    ledger = await sign_in(op, authorize_params("ledger", code_challenge=challenge))
    no_secret = await exchange(op, ledger["code"], verifier, client_id="ledger")
    assert (no_secret.status_code, no_secret.json()["error"]) == (401, "invalid_client")
    basic = base64.b64encode(f"ledger:{SECRET}".encode()).decode()
    form = {"grant_type": "authorization_code", "code": ledger["code"], "redirect_uri": REDIRECT}
    ok = await op.http.post(
        "/v1/token", data={**form, "code_verifier": verifier}, headers={"Authorization": f"Basic {basic}"}
    )
    assert ok.status_code == 200, ok.text
    assert "refresh_token" not in ok.json()  # no offline_access asked


async def test_a_code_used_twice_revokes_what_its_first_use_issued(op: Provider) -> None:
    verifier, challenge = pkce()
    query = await sign_in(op, authorize_params(code_challenge=challenge))
    first = (await exchange(op, query["code"], verifier, client_id="payroll")).json()
    second = await exchange(op, query["code"], verifier, client_id="payroll")
    assert (second.status_code, second.json()["error"]) == (400, "invalid_grant")
    info = await op.http.get("/userinfo", headers={"Authorization": f"Bearer {first['access_token']}"})
    assert (info.status_code, info.json()["code"]) == (401, "session_ended")
    refresh = await op.http.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": "payroll"},
    )
    assert refresh.status_code == 400


async def test_userinfo_refuses_tokens_not_issued_for_openid(op: Provider) -> None:
    tokens = await op.services.logins.sessions.start(subject=op.person_id, client_id="web", amr=["pwd"])
    info = await op.http.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert (info.status_code, info.json()["code"]) == (403, "insufficient_scope")
    assert (await op.http.get("/userinfo")).status_code == 401


# Pushed authorization requests ------------------------------------------------------------------------


async def test_pushed_requests_are_used_once_and_need_the_client(op: Provider) -> None:
    _, challenge = pkce()
    params = authorize_params("ledger", code_challenge=challenge)
    refused = await op.http.post("/par", data=params)
    assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
    pushed = await op.http.post("/par", data={**params, "client_secret": SECRET})
    assert pushed.status_code == 201, pushed.text
    request_uri = pushed.json()["request_uri"]
    assert request_uri.startswith("urn:ietf:params:oauth:request_uri:")
    by_reference = {"client_id": "ledger", "request_uri": request_uri}
    answer = await op.http.get("/authorize", params=by_reference)
    assert answer.status_code == 303
    replay = await op.http.get("/authorize", params=by_reference)
    assert (replay.status_code, "location" in replay.headers) == (400, False)
    bad = await op.http.post("/par", data={**params, "client_secret": SECRET, "code_challenge_method": "plain"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_request")


async def test_a_dpop_proof_at_the_code_exchange_binds_the_tokens_to_its_key(op: Provider) -> None:
    key = DpopKey()
    verifier, challenge = pkce()
    query = await sign_in(op, authorize_params(code_challenge=challenge))
    proof = key.proof("POST", ISSUER + "/v1/token")
    answer = await exchange(op, query["code"], verifier, client_id="payroll")
    assert answer.json()["token_type"] == "Bearer"  # no proof: a plain bearer token
    verifier, challenge = pkce()
    query = await sign_in(op, authorize_params(code_challenge=challenge))
    form = {"grant_type": "authorization_code", "code": query["code"], "redirect_uri": REDIRECT}
    bound = await op.http.post(
        "/v1/token", data={**form, "code_verifier": verifier, "client_id": "payroll"}, headers={"DPoP": proof}
    )
    assert bound.status_code == 200, bound.text
    tokens = bound.json()
    assert tokens["token_type"] == "DPoP"
    access = jwt.decode(tokens["access_token"], await keys(op), algorithms=["ES256"]).claims
    assert access["cnf"] == {"jkt": key.jkt}
    plain = await op.http.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert plain.status_code == 401  # a bound token is refused without a proof by its key
    url = ISSUER + "/userinfo"
    proven = await op.http.get(
        "/userinfo",
        headers={
            "Authorization": f"DPoP {tokens['access_token']}",
            "DPoP": key.proof("GET", url, tokens["access_token"]),
        },
    )
    assert proven.status_code == 200, proven.text
    replay = await op.http.post(
        "/v1/token", data={**form, "code_verifier": verifier, "client_id": "payroll"}, headers={"DPoP": proof}
    )
    assert replay.status_code == 400  # the code is spent (and the proof was used)


async def test_a_party_registered_for_rs256_gets_rs256_id_tokens_and_access_tokens_stay_es256(op: Provider) -> None:
    verifier, challenge = pkce()
    query = await sign_in(op, authorize_params("classic", code_challenge=challenge, scope="openid"))
    tokens = (await exchange(op, query["code"], verifier, client_id="classic")).json()
    decoded = jwt.decode(tokens["id_token"], await keys(op), algorithms=["RS256"])
    assert decoded.header["alg"] == "RS256"
    claims = CodeIDToken(decoded.claims, decoded.header, {}, {})
    claims.params = {"nonce": decoded.claims["nonce"], "client_id": "classic", "access_token": tokens["access_token"]}
    claims.validate(leeway=5)  # at_hash with SHA-256, as RS256 asks
    access = jwt.decode(tokens["access_token"], await keys(op), algorithms=["ES256"])
    assert access.header["alg"] == "ES256"
    # Downstream verifiers keep their ES256/EdDSA allow-list: an RS256 token is never an access token.
    from qrgate_verify.verifier import DEFAULT_ALGORITHMS

    assert "RS256" not in DEFAULT_ALGORITHMS


@pytest.mark.slow
async def test_an_expired_code_gets_nothing(tmp_path: Path) -> None:
    """Codes live `oidc_code_ttl` seconds (60 by default, 5 at the least): this one is 5."""
    settings = make_settings(tmp_path, 0, public_url=ISSUER, units_mount=False, oidc_code_ttl=5)
    services = Services.create(settings)
    async with services.running():
        await services.oidc.parties.add(new_party("payroll", name="薪酬系统", redirect_uris=[REDIRECT]))
        transport = httpx.ASGITransport(app=create_app(services=services))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            op = Provider(services, http, "p_nobody")
            verifier, challenge = pkce()
            query = await sign_in(op, authorize_params(code_challenge=challenge, scope="openid"))
            await asyncio.sleep(5.5)
            late = await exchange(op, query["code"], verifier, client_id="payroll")
            assert (late.status_code, late.json()["error"]) == (400, "invalid_grant")
            assert "access_token" not in late.json()
