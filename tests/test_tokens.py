"""Keys, rotation and the downstream verifier: what every tax subsystem relies on."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.settings import Settings
from gateway.tokens import AccessTokenVerifier, InvalidToken, RemoteJwks, TokenAuthMiddleware, jws, require_claims
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.keys import KeyFile, RetireRefused, generate_key, load_or_create, retire, rotate
from gateway.tokens.verifier import StaticKeys
from tests.support.clients import phone_login
from tests.support.gateway_server import AppServer, ThreadedGateway, free_port, make_settings

ISSUER = "https://login.test"


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
def keys(tmp_path: Path) -> KeyFile:
    return KeyFile(tmp_path / "keys.json", "ES256", check_every=0)


def issue(keys: KeyFile, **overrides: Any) -> str:
    settings = Settings(public_url=ISSUER, **overrides)
    return TokenIssuer(settings, keys).access_token(
        subject="p_1", client_id="web", session_id="s" * 22, amr=["pwd"], auth_time=int(time.time())
    )


def verifier(keys: KeyFile, audience: str = "qrgate-sso") -> AccessTokenVerifier:
    return AccessTokenVerifier(StaticKeys(lambda: keys.ring.verification_keys), issuer=ISSUER, audience=audience)


@pytest.mark.anyio
async def test_a_good_token_verifies(keys: KeyFile) -> None:
    claims = await verifier(keys).verify(issue(keys))
    assert claims["sub"] == "p_1"


@pytest.mark.anyio
async def test_hostile_tokens_are_rejected(keys: KeyFile) -> None:
    good = issue(keys)
    header, payload, _ = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    kid = keys.ring.signing_key().kid
    public = json.dumps(keys.ring.public_jwks()["keys"][0]).encode()
    hs256 = jwt.encode(
        {"alg": "HS256", "typ": "at+jwt", "kid": kid}, claims, OctKey.import_key(public), algorithms=["HS256"]
    )
    forged = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{payload}.",
        "HS256 with the public key as secret": hs256,
        "wrong typ": jwt.encode(
            {"alg": "ES256", "typ": "JWT", "kid": kid}, claims, keys.ring.signing_key().key, algorithms=["ES256"]
        ),
        "tampered payload": f"{header}.{b64({**claims, 'sub': 'p_2'})}.{good.split('.')[2]}",
        "garbage": "a.b.c",
        "too long": "a" * 9000,
    }
    for name, token in forged.items():
        try:
            await verifier(keys).verify(token)
        except InvalidToken:
            continue
        pytest.fail(f"accepted: {name}")
    with pytest.raises(InvalidToken, match="audience"):
        await verifier(keys, audience="payroll").verify(good)
    other_issuer = AccessTokenVerifier(
        StaticKeys(lambda: keys.ring.verification_keys), issuer="https://evil", audience="qrgate-sso"
    )
    with pytest.raises(InvalidToken):
        await other_issuer.verify(good)


@pytest.mark.anyio
async def test_expired_tokens_are_rejected(keys: KeyFile) -> None:
    settings = Settings(public_url=ISSUER, access_token_ttl=30)
    old = TokenIssuer(settings, keys).access_token(
        subject="p_1", client_id="web", session_id="s" * 22, amr=["pwd"], auth_time=0, now=time.time() - 120
    )
    with pytest.raises(InvalidToken):
        await verifier(keys).verify(old)


def test_refuses_symmetric_algorithms(keys: KeyFile) -> None:
    with pytest.raises(ValueError, match="non-asymmetric"):
        AccessTokenVerifier(
            StaticKeys(lambda: keys.ring.verification_keys), issuer=ISSUER, audience="a", algorithms=("HS256",)
        )


@pytest.mark.anyio
async def test_eddsa_keys(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "ed.json", "EdDSA")
    token = issue(keys)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "EdDSA"
    assert (await verifier(keys).verify(token))["sub"] == "p_1"


def test_rotation_and_retirement_rules(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    created = load_or_create(path, "ES256")
    first = created.family(None)[0]
    rsa = created.family("RS256")  # every ring has a key for the id_tokens of RS256 relying parties
    assert [k.alg for k in created.keys] == ["ES256", "RS256"]
    now = time.time()
    second = rotate(path, "EdDSA", activation_delay=900, now=now)
    ring = load_or_create(path, "ES256")
    assert {k.kid for k in ring.family(None)} == {first.kid, second.kid}
    assert ring.family("RS256") == rsa
    assert ring.signing_key(now + 10).kid == first.kid  # published, not signing yet
    assert ring.signing_key(now + 901).kid == second.kid
    with pytest.raises(RetireRefused, match="signing key"):
        retire(path, first.kid, access_token_ttl=600, now=now + 10)
    with pytest.raises(RetireRefused, match="may live"):
        retire(path, first.kid, access_token_ttl=600, now=now + 1000)
    retire(path, first.kid, access_token_ttl=600, now=now + 900 + 600 + 61)
    assert [k.kid for k in load_or_create(path, "ES256").family(None)] == [second.kid]
    with pytest.raises(RetireRefused):
        retire(path, second.kid, access_token_ttl=600, now=now + 5000)


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path_factory.mktemp("rotating"), port), port).start()
    yield server
    server.stop()


def qrgate_keys(server: ThreadedGateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "QRGATE_KEYS_FILE": server.settings.keys_file,
        "QRGATE_DATABASE_URL": server.settings.database_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
async def rotating_http(rotating: ThreadedGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=rotating.base_url) as client:
        yield client


@pytest.mark.slow  # `qrgate keys` subprocesses and key activation delays
@pytest.mark.anyio
async def test_rotation_keeps_every_verifier_working(
    rotating: ThreadedGateway, rotating_http: httpx.AsyncClient, tmp_path: Path
) -> None:
    import asyncio

    from tests.conftest import new_identity

    identity = new_identity()
    person_id = await asyncio.to_thread(lambda: rotating.add_person(**identity))
    before = await phone_login(rotating_http, identity)
    jwks = RemoteJwks(f"{rotating.base_url}/.well-known/jwks.json", cooldown=0.0)
    downstream = AccessTokenVerifier(jwks, issuer=rotating.base_url, audience="qrgate-sso")
    try:
        assert (await downstream.verify(before))["sub"] == person_id
        response = await rotating_http.get("/.well-known/jwks.json")
        assert response.headers["cache-control"] == "public, max-age=300"
        assert [key["kty"] for key in response.json()["keys"]] == ["EC", "RSA"]  # RSA: RS256 id_tokens only

        rotated = qrgate_keys(rotating, "rotate", "--activation-delay", "0")
        assert rotated.returncode == 0, rotated.stderr
        new_kid = rotated.stdout.split(":")[0]
        await asyncio.sleep(1.2)  # the server re-reads its key file at most once a second
        published = (await rotating_http.get("/.well-known/jwks.json")).json()["keys"]
        assert new_kid in {k["kid"] for k in published}
        after = await phone_login(rotating_http, identity)
        header = json.loads(base64.urlsafe_b64decode(after.split(".")[0] + "=="))
        assert header["kid"] == new_kid
        # The verifier cached the old JWKS: the unknown kid makes it fetch again.
        await downstream.verify(after)
        await downstream.verify(before)  # tokens signed before the rotation still verify

        listed = qrgate_keys(rotating, "list")
        assert listed.stdout.count("\n") == 3
        signing = [line for line in listed.stdout.splitlines() if "signing" in line]
        assert len(signing) == 1
        assert signing[0].startswith(new_kid)
        refused = qrgate_keys(rotating, "retire", header["kid"])
        assert refused.returncode == 2
    finally:
        await jwks.aclose()


@pytest.mark.anyio
async def test_middleware_protects_a_downstream_app(keys: KeyFile) -> None:
    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"sub": require_claims(request)["sub"]})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/whoami", whoami), Route("/health", health)],
        middleware=[Middleware(TokenAuthMiddleware, verifier=verifier(keys), public_paths=["/health"])],
    )
    with AppServer(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/whoami")).status_code == 401
            junk = await client.get("/whoami", headers={"Authorization": "Bearer junk.junk.junk"})
            assert junk.status_code == 401
            assert junk.headers["content-type"] == "application/problem+json"
            ok = await client.get("/whoami", headers={"Authorization": f"Bearer {issue(keys)}"})
            assert ok.json() == {"sub": "p_1"}


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_our_signatures_verify_with_joserfc(alg: str) -> None:
    """`gateway.tokens.jws` signs without joserfc; joserfc (and so every verifier) must accept it."""
    key = generate_key(alg)
    header = {"alg": alg, "typ": "at+jwt", "kid": key.kid}
    payload = {"iss": ISSUER, "sub": "p_1", "amr": ["qr"], "n": 1, "name": "张三"}
    token = jws.sign(header, payload, key)
    decoded = jwt.decode(token, key.key, algorithms=[alg])
    assert (decoded.header, decoded.claims) == (header, payload)
    signature = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
    assert len(signature) == 64  # ES256: R || S, 32 bytes each; Ed25519: 64 bytes
    # A changed payload no longer verifies.
    forged = token.split(".")
    forged[1] = b64({**payload, "sub": "p_2"})
    with pytest.raises(Exception, match="signature"):
        jwt.decode(".".join(forged), key.key, algorithms=[alg])
    with pytest.raises(ValueError, match="alg"):
        jws.sign({**header, "alg": "HS256"}, payload, key)
