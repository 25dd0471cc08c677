"""`private_key_jwt` client authentication for relying parties (OpenID Connect Core 9, RFC 7523):
Authlib's client with its `PrivateKeyJWT` auth through the code flow, refresh, PAR and revocation
against a real gateway; every bad assertion a 401 `invalid_client` that issues nothing; keys fetched
from a `jwks_uri` served by a small fake relying party (rotation, outage, size limit); registration.

The provider runs in the test's own event loop (tests/support/oidc.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import authlib.deprecate
import httpx
import pytest
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import cli
from gateway.oidc.clients import InvalidRelyingParty, RelyingParty, new_party
from gateway.oidc.provider import SignedIn
from gateway.oidc.requests import s256
from gateway.tokens.assertions import ASSERTION_TYPE
from tests.support.accounts import FakeService
from tests.support.oidc import LiveProvider, add_person
from tests.support.schemas import jwt_parts
from tests.test_protocols import assert_documented

# As in tests/test_oidc_relying_parties.py: Authlib would rather run on the httpx2 fork; httpx works.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "The httpx module is deprecated", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

pytestmark = pytest.mark.anyio

REDIRECT = "https://keyed.example/cb"


def public_jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


async def register_keyed(
    live: LiveProvider, client_id: str, *, keys: tuple[Key, ...] = (), jwks_uri: str | None = None
) -> RelyingParty:
    party = new_party(
        client_id,
        name=f"Keyed {client_id}",
        redirect_uris=[REDIRECT],
        jwks=public_jwks(*keys) if keys else None,
        jwks_uri=jwks_uri,
    )
    await live.services.oidc.parties.add(party)
    return party


def assertion(key: Key, client_id: str, audience: str, *, alg: str = "ES256", **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    header = {"alg": alg, "kid": key.kid} if key.kid else {"alg": alg}
    return jwt.encode(header, claims, key, algorithms=[alg])


def b64_bytes(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def b64(value: object) -> str:
    return b64_bytes(json.dumps(value).encode())


def assertion_form(signed: str) -> dict[str, str]:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": signed}


@dataclass
class Authorized:
    code: str
    verifier: str
    subject: str


async def authorized(live: LiveProvider, party: RelyingParty, *, subject: str | None = None) -> Authorized:
    """A code for `party`: /authorize, then the sign-in as the sign-in page completes it."""
    verifier = secrets.token_urlsafe(48)
    params = {
        "client_id": party.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid profile offline_access",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "state": "s",
    }
    answer = await live.http.get("/authorize", params=params)
    assert answer.status_code == 303, answer.text
    provider = live.services.oidc
    request_id = parse_qs(urlsplit(answer.headers["location"]).query)["request"][0]
    pending = await provider.pending(request_id, answer.cookies[provider.binding_cookie])
    subject = subject or await add_person(live)
    done = await provider.complete(pending, SignedIn(subject, ("pwd",), int(time.time())))
    return Authorized(parse_qs(urlsplit(done.url).query)["code"][0], verifier, subject)


def code_form(got: Authorized) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": got.code,
        "redirect_uri": REDIRECT,
        "code_verifier": got.verifier,
    }


async def sessions_of(live: LiveProvider, subject: str) -> list[str]:
    return [s.client_id for s in await live.services.tokens.sessions.list_of(subject)]


async def test_authlib_private_key_jwt_code_flow_refresh_par_and_revoke(live: LiveProvider) -> None:
    key = ECKey.generate_key("P-256", auto_kid=True)
    party = await register_keyed(live, "keyed", keys=(key,))
    discovery = (await live.http.get("/.well-known/openid-configuration")).json()
    assert "private_key_jwt" in discovery["token_endpoint_auth_methods_supported"]
    assert {"ES256", "RS256", "PS256", "EdDSA"} <= set(discovery["token_endpoint_auth_signing_alg_values_supported"])
    assert not {"none", "HS256"} & set(discovery["token_endpoint_auth_signing_alg_values_supported"])
    token_endpoint = discovery["token_endpoint"]

    client = AsyncOAuth2Client(
        party.client_id,
        key,
        scope="openid profile offline_access",
        redirect_uri=REDIRECT,
        token_endpoint_auth_method="private_key_jwt",
        revocation_endpoint_auth_method="private_key_jwt",
        code_challenge_method="S256",
    )
    client.register_client_auth_method(PrivateKeyJWT(token_endpoint, alg="ES256"))  # signs for an hour: iat caps it
    async with client:
        verifier = secrets.token_urlsafe(48)
        url, state = client.create_authorization_url(discovery["authorization_endpoint"], code_verifier=verifier)
        answer = await live.http.get(url)
        assert answer.status_code == 303
        provider = live.services.oidc
        request_id = parse_qs(urlsplit(answer.headers["location"]).query)["request"][0]
        pending = await provider.pending(request_id, answer.cookies[provider.binding_cookie])
        subject = await add_person(live)
        done = await provider.complete(pending, SignedIn(subject, ("qr",), int(time.time())))

        tokens = await client.fetch_token(
            token_endpoint, authorization_response=done.url, state=state, code_verifier=verifier
        )
        claims = jwt_parts(tokens["id_token"])[1]
        assert claims["aud"] == "keyed"
        assert claims["sub"] == subject
        assert claims["amr"] == ["qr"]
        assert jwt_parts(tokens["access_token"])[1]["client_id"] == "keyed"

        refreshed = await client.refresh_token(token_endpoint)
        assert refreshed["refresh_token"] != tokens["refresh_token"]

        pushed = await live.http.post(
            discovery["pushed_authorization_request_endpoint"],
            data={
                "client_id": "keyed",
                "redirect_uri": REDIRECT,
                "response_type": "code",
                "scope": "openid",
                "code_challenge": s256(verifier),
                "code_challenge_method": "S256",
                **assertion_form(assertion(key, "keyed", live.settings.issuer)),
            },
        )
        assert pushed.status_code == 201, pushed.text
        assert_documented(pushed, "POST", "/par")
        assert pushed.json()["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")

        stranger = ECKey.generate_key("P-256", auto_kid=True)
        forged = await live.http.post(
            "/v1/revoke",
            data={
                "token": refreshed["refresh_token"],
                **assertion_form(assertion(stranger, "keyed", discovery["revocation_endpoint"])),
            },
        )
        assert forged.status_code == 401  # a wrong assertion revokes nothing
        assert_documented(forged, "POST", "/v1/revoke")
        assert sorted(await sessions_of(live, subject)) == ["keyed", "web"]
        revoked = await client.revoke_token(discovery["revocation_endpoint"], refreshed["refresh_token"])
        assert revoked.status_code == 200
        assert await sessions_of(live, subject) == ["web"]  # the relying party's session ended

        # A secret (or nothing) is no way in for a client registered with keys.
        no_key = await live.http.post(
            "/v1/token", data={**code_form(await authorized(live, party)), "client_id": "keyed"}
        )
        assert no_key.status_code == 401
        assert no_key.json()["error"] == "invalid_client"
        by_secret = await live.http.post(
            "/v1/token", data=code_form(await authorized(live, party)), auth=("keyed", "x" * 40)
        )
        assert by_secret.status_code == 401


@pytest.mark.parametrize(
    "case",
    [
        "wrong key",
        "replayed jti",
        "expired",
        "exp too far ahead without iat",
        "iat too old",
        "wrong aud",
        "alg none",
        "HS256 with the public key",
        "iss is another client",
        "sub differs",
        "no jti",
        "unknown kid",
        "missing assertion",
        "wrong assertion type",
        "not a JWT",
        "secret and assertion",
    ],
)
async def test_bad_assertions_are_invalid_client_and_issue_nothing(live: LiveProvider, case: str) -> None:
    key = ECKey.generate_key("P-256", auto_kid=True)
    party = await register_keyed(live, "keyed", keys=(key,))
    await register_keyed(live, "other", keys=(ECKey.generate_key("P-256", auto_kid=True),))
    got = await authorized(live, party)
    token_url = live.settings.issuer + "/v1/token"
    now = int(time.time())
    form = code_form(got)
    if case == "wrong key":
        stranger = ECKey.generate_key("P-256")
        stranger_with_kid = ECKey.import_key({**stranger.as_dict(private=True), "kid": str(key.kid)})  # a lie
        form |= assertion_form(assertion(stranger_with_kid, "keyed", token_url))
    elif case == "replayed jti":
        first = assertion(key, "keyed", token_url)
        spent = await live.http.post(
            "/v1/token", data={**code_form(await authorized(live, party)), **assertion_form(first)}
        )
        assert spent.status_code == 200, spent.text
        form |= assertion_form(first)
    elif case == "expired":
        form |= assertion_form(assertion(key, "keyed", token_url, iat=now - 400, exp=now - 100))
    elif case == "exp too far ahead without iat":
        form |= assertion_form(assertion(key, "keyed", token_url, iat=None, exp=now + 3600))
    elif case == "iat too old":
        form |= assertion_form(assertion(key, "keyed", token_url, iat=now - 3000, exp=now + 600))
    elif case == "wrong aud":
        form |= assertion_form(assertion(key, "keyed", "https://elsewhere.example/token"))
    elif case == "alg none":
        header = {"alg": "none", "kid": key.kid}
        claims = {"iss": "keyed", "sub": "keyed", "aud": token_url, "exp": now + 60, "jti": uuid.uuid4().hex}
        form |= assertion_form(f"{b64(header)}.{b64(claims)}.")  # unsigned (joserfc will not even write one)
    elif case == "HS256 with the public key":
        # The classic confusion: the public key (which anyone may have) used as an HMAC secret. Signed by
        # hand, as joserfc refuses to make such a key.
        claims = {"iss": "keyed", "sub": "keyed", "aud": token_url, "exp": now + 60, "jti": uuid.uuid4().hex}
        signing_input = f"{b64({'alg': 'HS256', 'kid': key.kid})}.{b64(claims)}"
        mac = hmac.new(key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
        form |= assertion_form(f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}")
    elif case == "iss is another client":
        form |= assertion_form(assertion(key, "other", token_url))
    elif case == "sub differs":
        form |= assertion_form(assertion(key, "keyed", token_url, sub="other"))
    elif case == "no jti":
        form |= assertion_form(assertion(key, "keyed", token_url, jti=None))
    elif case == "unknown kid":
        rotated = ECKey.generate_key("P-256", auto_kid=True)
        form |= assertion_form(assertion(rotated, "keyed", token_url))
    elif case == "missing assertion":
        form |= {"client_assertion_type": ASSERTION_TYPE, "client_id": "keyed"}
    elif case == "wrong assertion type":
        form |= {"client_assertion_type": "urn:x", "client_assertion": assertion(key, "keyed", token_url)}
    elif case == "not a JWT":
        form |= assertion_form("e30.WzFd.c2ln")
    else:
        form |= {**assertion_form(assertion(key, "keyed", token_url)), "client_secret": "s" * 40}
    before = await sessions_of(live, got.subject)

    answer = await live.http.post("/v1/token", data=form)

    assert answer.status_code == 401, (case, answer.text)
    body = assert_documented(answer, "POST", "/v1/token")
    assert body["error"] == "invalid_client", body
    assert body["detail"]
    assert "access_token" not in body
    assert answer.headers["www-authenticate"].startswith("Basic")
    assert await sessions_of(live, got.subject) == before == ["web"]
    # Nothing was issued and the code was not spent: the rightful client still gets its tokens.
    rightful = await live.http.post(
        "/v1/token", data={**code_form(got), **assertion_form(assertion(key, "keyed", token_url))}
    )
    assert rightful.status_code == 200, rightful.text


async def test_each_allowed_algorithm_and_kid_selection(live: LiveProvider) -> None:
    keys: list[tuple[Key, str]] = [
        (ECKey.generate_key("P-256", auto_kid=True), "ES256"),
        (RSAKey.generate_key(2048, auto_kid=True), "RS256"),
        (RSAKey.generate_key(2048, auto_kid=True), "PS256"),
        (OKPKey.generate_key("Ed25519", auto_kid=True), "EdDSA"),
        (OKPKey.generate_key("Ed25519", auto_kid=True), "Ed25519"),
    ]
    party = await register_keyed(live, "multi", keys=tuple(key for key, _ in keys))
    for key, alg in keys:
        got = await authorized(live, party)
        signed = assertion(key, "multi", live.settings.issuer, alg=alg)  # the issuer as aud
        answer = await live.http.post("/v1/token", data={**code_form(got), **assertion_form(signed)})
        assert answer.status_code == 200, (alg, answer.text)
    # Without a kid, a set with two RSA keys cannot say which one: refused; with one EC key it can.
    rsa_key, _ = keys[1]
    anonymous_rsa = RSAKey.import_key({n: v for n, v in rsa_key.as_dict(private=True).items() if n != "kid"})
    anonymous_rsa_signed = jwt.encode(
        {"alg": "RS256"},
        {"iss": "multi", "sub": "multi", "aud": live.settings.issuer, "exp": int(time.time()) + 60, "jti": "a1"},
        anonymous_rsa,
        algorithms=["RS256"],
    )
    got = await authorized(live, party)
    refused = await live.http.post("/v1/token", data={**code_form(got), **assertion_form(anonymous_rsa_signed)})
    assert refused.status_code == 401
    assert "kid" in refused.json()["detail"]
    ec_key, _ = keys[0]
    anonymous_ec = jwt.encode(
        {"alg": "ES256"},
        {"iss": "multi", "sub": "multi", "aud": live.settings.issuer, "exp": int(time.time()) + 60, "jti": "e1"},
        ec_key,
        algorithms=["ES256"],
    )
    accepted = await live.http.post("/v1/token", data={**code_form(got), **assertion_form(anonymous_ec)})
    assert accepted.status_code == 200, accepted.text


@dataclass
class JwksSite:
    """A relying party's jwks_uri: serves `jwks` (or `status`, or `body` as it is), counting GETs."""

    jwks: dict[str, Any]
    status: int = 200
    body: bytes | None = None
    gets: list[float] = field(default_factory=list)

    def app(self) -> Starlette:
        async def jwks(request: Request) -> Response:
            self.gets.append(time.monotonic())
            content = self.body if self.body is not None else json.dumps(self.jwks).encode()
            return Response(content, status_code=self.status, media_type="application/jwk-set+json")

        return Starlette(routes=[Route("/jwks.json", jwks)])


@pytest.fixture
def jwks_site() -> Iterator[tuple[JwksSite, str]]:
    site = JwksSite({"keys": []})
    with FakeService(site.app()) as service:
        yield site, service.url + "/jwks.json"


async def test_keys_from_a_jwks_uri_cached_rotated_and_limited(
    live: LiveProvider, jwks_site: tuple[JwksSite, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site, uri = jwks_site
    first = ECKey.generate_key("P-256", auto_kid=True)
    site.jwks = public_jwks(first)
    party = await register_keyed(live, "remote", jwks_uri=uri)
    token_url = live.settings.issuer + "/v1/token"

    async def exchange(key: Key) -> httpx.Response:
        got = await authorized(live, party)
        return await live.http.post(
            "/v1/token", data={**code_form(got), **assertion_form(assertion(key, "remote", token_url))}
        )

    assert (await exchange(first)).status_code == 200
    assert (await exchange(first)).status_code == 200
    assert len(site.gets) == 1  # kept, not fetched per request

    # The party rotates: a new kid is fetched at once (the first fetch is older than REFETCH_AFTER).
    from gateway.oidc import client_keys

    monkeypatch.setattr(client_keys, "REFETCH_AFTER", 0.0)
    second = ECKey.generate_key("P-256", auto_kid=True)
    site.jwks = public_jwks(first, second)
    assert (await exchange(second)).status_code == 200
    assert len(site.gets) == 2
    # Kids nobody has do not make the gateway ask again and again within REFETCH_AFTER.
    monkeypatch.setattr(client_keys, "REFETCH_AFTER", 30.0)
    for _ in range(3):
        assert (await exchange(ECKey.generate_key("P-256", auto_kid=True))).status_code == 401
    assert len(site.gets) == 2

    # The site fails: the keys kept last still serve, and a stranger's key is still refused.
    monkeypatch.setattr(client_keys, "KEEP_FOR", 0.0)
    site.status = 503
    assert (await exchange(second)).status_code == 200
    assert len(site.gets) == 3

    # A fresh gateway that never got the keys: an outage or an oversized answer is invalid_client.
    live.services.oidc.client_keys._fetched.clear()
    refused = await exchange(second)
    assert refused.status_code == 401
    assert "jwks_uri" in refused.json()["detail"]
    site.status, site.body = 200, b'{"keys": [' + b" " * 70_000 + b"]}"
    assert (await exchange(second)).status_code == 401
    site.body = json.dumps({"keys": [first.as_dict(private=True)]}).encode()  # a private key: never used
    assert (await exchange(first)).status_code == 401
    site.body = None
    assert (await exchange(second)).status_code == 200


async def test_a_jwks_uri_that_never_answers_is_cut_off(live: LiveProvider) -> None:
    release = threading.Event()

    async def stall(request: Request) -> Response:
        await asyncio.to_thread(release.wait, 10)
        return Response("{}")

    with FakeService(Starlette(routes=[Route("/jwks.json", stall)])) as service:
        party = await register_keyed(live, "slow", jwks_uri=service.url + "/jwks.json")
        live.services.oidc.client_keys._timeout = 0.5
        got = await authorized(live, party)
        key = ECKey.generate_key("P-256", auto_kid=True)
        started = time.monotonic()
        answer = await live.http.post(
            "/v1/token", data={**code_form(got), **assertion_form(assertion(key, "slow", live.settings.issuer))}
        )
        assert answer.status_code == 401
        assert time.monotonic() - started < 3
        release.set()


def test_registering_keys_with_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        "QRGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'qrgate.db'}",
        "QRGATE_KEYS_FILE": str(tmp_path / "k.json"),
    }
    key = ECKey.generate_key("P-256", auto_kid=True)
    public = tmp_path / "jwks.json"
    public.write_text(json.dumps(public_jwks(key)))
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    base = ["admin", "client", "add", "erp", "--name", "ERP", "--redirect-uri", "https://erp.example/cb"]

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert cli.main([*base, "--jwks-file", str(private)]) == 2
        assert "private" in capsys.readouterr().err
        assert cli.main([*base, "--jwks-file", str(public), "--secret-stdin"]) == 2
        assert "--jwks-file" in capsys.readouterr().err
        assert cli.main([*base, "--jwks-uri", "http://erp.example/jwks"]) == 2  # https only
        capsys.readouterr()
        assert cli.main([*base, "--jwks-file", str(public), "--jwks-uri", "https://erp.example/jwks.json"]) == 0
        capsys.readouterr()
        assert cli.main(["admin", "client", "list"]) == 0
        listed = capsys.readouterr().out
    assert "erp  confidential private_key_jwt" in listed
    assert f"jwks: 1 key(s), kid {key.kid}" in listed
    assert "jwks_uri: https://erp.example/jwks.json" in listed
    assert '"d"' not in listed


def test_a_jwks_must_hold_usable_public_keys() -> None:
    def party(jwks: object) -> RelyingParty:
        return new_party("x", name="X", redirect_uris=[REDIRECT], jwks=jwks)

    assert party(public_jwks(OKPKey.generate_key("Ed25519"))).uses_keys
    bad: object
    for bad in (
        {"keys": []},
        {"keys": "x"},
        [1],
        {"keys": [{"kty": "RSA", "e": "AQAB", "n": b64_bytes(secrets.token_bytes(128))}]},  # 1024 bits: too short
        public_jwks(ECKey.generate_key("P-384")),  # not an allowed curve
        {"keys": [OctKey.generate_key(256).as_dict()]},  # a shared secret
    ):
        with pytest.raises(InvalidRelyingParty):
            party(bad)
