"""Sessions and single sign-on through a real server: refresh rotation and reuse detection,
revocation, logout, session lists, introspection, token exchange, DPoP."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.conftest import new_identity
from tests.support.clients import bearer, close_code, mint, next_message, open_events
from tests.support.dpop import DpopKey
from tests.support.gateway_server import ThreadedGateway
from tests.support.sso import SERVICE_KEY, SERVICE_SECRET, start_sso_gateway

pytestmark = pytest.mark.anyio
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    server = start_sso_gateway(tmp_path_factory.mktemp("sso"))
    yield server
    server.stop()


@pytest.fixture
async def http(sso: ThreadedGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sso.base_url, timeout=10) as client:
        yield client


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return result


async def login(http: httpx.AsyncClient, sso: ThreadedGateway, client_id: str = "mobile-app") -> dict[str, Any]:
    identity = new_identity()
    identity["id"] = await asyncio.to_thread(sso.add_person, **identity)
    response = await http.post(
        "/v1/login/password",
        json={"identifier": identity["phone"], "password": identity["password"], "client_id": client_id},
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    body["person"] = identity
    return body


async def refresh(http: httpx.AsyncClient, token: str, client_id: str = "mobile-app", **headers: str) -> httpx.Response:
    return await http.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
        headers=headers,
    )


async def qr_login(http: httpx.AsyncClient, phone: str, **mint_extra: Any) -> dict[str, Any]:
    minted = await mint(http, **mint_extra)
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
    await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
    ws = await open_events(minted)
    await next_message(ws)
    confirmed = await next_message(ws)
    assert await close_code(ws) == 1000
    token: dict[str, Any] = confirmed["token"]
    return token


async def test_rotation_chain_of_100(http: httpx.AsyncClient, sso: ThreadedGateway) -> None:
    tokens = await login(http, sso)
    sid = claims_of(tokens["access_token"])["sid"]
    seen = {tokens["refresh_token"]}
    current = tokens["refresh_token"]
    for _ in range(100):
        response = await refresh(http, current)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["refresh_token"] not in seen
        assert claims_of(body["access_token"])["sid"] == sid
        seen.add(body["refresh_token"])
        current = body["refresh_token"]
    assert len(seen) == 101


async def test_reuse_kills_the_session_and_its_descendants(http: httpx.AsyncClient, sso: ThreadedGateway) -> None:
    tokens = await login(http, sso)
    first = tokens["refresh_token"]
    second = (await refresh(http, first)).json()
    third = (await refresh(http, second["refresh_token"])).json()
    # Someone replays the first token: the whole session dies.
    reused = await refresh(http, first)
    assert reused.status_code == 400
    assert reused.json()["code"] == "refresh_token_reused"
    assert reused.json()["error"] == "invalid_grant"
    descendant = await refresh(http, third["refresh_token"])
    assert descendant.status_code == 400
    assert descendant.json()["error"] == "invalid_grant"
    # ...and the gateway refuses its access tokens at once.
    sessions = await http.get("/v1/sessions", headers=bearer(third["access_token"]))
    assert sessions.status_code == 401
    assert sessions.json()["code"] == "session_ended"


async def test_refresh_refuses_other_clients_and_garbage(http: httpx.AsyncClient, sso: ThreadedGateway) -> None:
    tokens = await login(http, sso)
    other = await refresh(http, tokens["refresh_token"], client_id="web")
    assert other.status_code == 400
    assert (await refresh(http, tokens["refresh_token"])).status_code == 200
    for junk in ("", "x", "a" * 22 + "." + "b" * 43, "." * 70):
        response = await refresh(http, junk)
        assert response.status_code == 400
    wrong_grant = await http.post("/v1/token", data={"grant_type": "password"})
    assert wrong_grant.json()["error"] == "unsupported_grant_type"
    as_json = await http.post("/v1/token", json={"grant_type": "refresh_token"})
    assert as_json.status_code == 415


async def test_phone_signs_out_the_desktop(http: httpx.AsyncClient, sso: ThreadedGateway) -> None:
    phone = await login(http, sso)
    desktop = await qr_login(http, phone["access_token"])
    listed = (await http.get("/v1/sessions", headers=bearer(phone["access_token"]))).json()["sessions"]
    assert {s["client_id"] for s in listed} == {"mobile-app", "withholding-desktop"}
    desktop_session = next(s for s in listed if s["client_id"] == "withholding-desktop")
    assert desktop_session["amr"] == ["qr"]
    assert desktop_session["device_name"] == "PC-01"
    assert next(s for s in listed if s["current"])["client_id"] == "mobile-app"

    ended = await http.delete(f"/v1/sessions/{desktop_session['sid']}", headers=bearer(phone["access_token"]))
    assert ended.status_code == 204
    assert (await refresh(http, desktop["refresh_token"], client_id="withholding-desktop")).status_code == 400
    assert (await http.get("/v1/sessions", headers=bearer(desktop["access_token"]))).status_code == 401
    # One cannot end someone else's session.
    stranger = await login(http, sso)
    refused = await http.delete(
        f"/v1/sessions/{claims_of(phone['access_token'])['sid']}", headers=bearer(stranger["access_token"])
    )
    assert refused.status_code == 404


async def test_logout_and_revoke(http: httpx.AsyncClient, sso: ThreadedGateway) -> None:
    tokens = await login(http, sso)
    assert (await http.post("/v1/logout", headers=bearer(tokens["access_token"]))).status_code == 204
    assert (await refresh(http, tokens["refresh_token"])).status_code == 400

    other = await login(http, sso)
    revoked = await http.post("/v1/revoke", data={"token": other["refresh_token"], "client_id": "mobile-app"})
    assert revoked.status_code == 200
    assert (await refresh(http, other["refresh_token"])).status_code == 400
    # RFC 7009: an unknown token is not an error.
    assert (await http.post("/v1/revoke", data={"token": "nothing"})).status_code == 200
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert (await http.post("/v1/revoke", content=b"", headers=form)).status_code == 400
    assert (await http.post("/v1/revoke", content=b"token=a&token=b", headers=form)).status_code == 400


def assertion(client_id: str, audience: str, key: ECKey = SERVICE_KEY, **overrides: Any) -> str:
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": int(time.time()) + 60,
        "jti": secrets.token_hex(8),
    }
    claims.update(overrides)
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"])


async def test_introspection_for_authenticated_services(http: httpx.AsyncClient, sso: ThreadedGateway) -> None:
    tokens = await login(http, sso)
    by_secret = await http.post(
        "/v1/introspect", data={"token": tokens["access_token"]}, auth=("payroll-service", SERVICE_SECRET)
    )
    assert by_secret.status_code == 200
    assert by_secret.json()["active"] is True
    assert by_secret.json()["sub"] == tokens["person"]["id"]

    signed = assertion("audit-service", f"{sso.base_url}/v1/introspect")
    form = {
        "token": tokens["refresh_token"],
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed,
    }
    by_key = await http.post("/v1/introspect", data=form)
    assert by_key.json()["active"] is True
    assert by_key.json()["token_type"] == "refresh_token"
    replayed = await http.post("/v1/introspect", data=form)
    assert replayed.status_code == 401

    await http.post("/v1/logout", headers=bearer(tokens["access_token"]))
    after = await http.post(
        "/v1/introspect", data={"token": tokens["access_token"]}, auth=("payroll-service", SERVICE_SECRET)
    )
    assert after.json() == {"active": False}

    anonymous = await http.post("/v1/introspect", data={"token": tokens["access_token"]})
    assert anonymous.status_code == 401
    wrong_secret = await http.post("/v1/introspect", data={"token": "x"}, auth=("payroll-service", "wrong"))
    assert wrong_secret.status_code == 401
    not_allowed = await http.post("/v1/introspect", data={"token": "x"}, auth=("nosy-service", "nosy-secret"))
    assert not_allowed.status_code == 403
    forged = assertion("audit-service", f"{sso.base_url}/v1/introspect", key=ECKey.generate_key("P-256", auto_kid=True))
    refused = await http.post(
        "/v1/introspect",
        data={"token": "x", "client_assertion_type": form["client_assertion_type"], "client_assertion": forged},
    )
    assert refused.status_code == 401


async def test_token_exchange(http: httpx.AsyncClient, sso: ThreadedGateway) -> None:
    phone = await login(http, sso)
    desktop = await qr_login(http, phone["access_token"])
    form = {
        "grant_type": EXCHANGE,
        "subject_token": desktop["access_token"],
        "subject_token_type": ACCESS,
        "audience": "units",
        "client_id": "withholding-desktop",
    }
    allowed = await http.post("/v1/token", data=form)
    assert allowed.status_code == 200, allowed.text
    exchanged = claims_of(allowed.json()["access_token"])
    assert exchanged["aud"] == "units"
    assert exchanged["scope"] == "units.read units.verify"
    assert exchanged["sub"] == phone["person"]["id"]
    assert exchanged["sid"] == claims_of(desktop["access_token"])["sid"]
    assert "act" not in exchanged

    narrower = await http.post("/v1/token", data={**form, "scope": "units.read"})
    assert claims_of(narrower.json()["access_token"])["scope"] == "units.read"
    wider = await http.post("/v1/token", data={**form, "scope": "units.admin"})
    assert wider.json()["error"] == "invalid_scope"
    unknown = await http.post("/v1/token", data={**form, "audience": "nowhere"})
    assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_target")
    not_for_desktop = await http.post("/v1/token", data={**form, "audience": "payroll"})
    assert (not_for_desktop.status_code, not_for_desktop.json()["error"]) == (403, "unauthorized_client")
    other_client = await http.post("/v1/token", data={**form, "client_id": "mobile-app"})
    assert other_client.json()["error"] == "invalid_grant"

    # A service exchanging on the person's behalf is named in `act`.
    on_behalf = await http.post(
        "/v1/token", data={**form, "audience": "payroll", "client_id": ""}, auth=("payroll-service", SERVICE_SECRET)
    )
    assert on_behalf.status_code == 200, on_behalf.text
    acting = claims_of(on_behalf.json()["access_token"])
    assert acting["act"] == {"sub": "payroll-service"}
    assert acting["aud"] == "payroll"


async def test_dpop_bound_tokens(http: httpx.AsyncClient, sso: ThreadedGateway) -> None:
    key = DpopKey()
    phone = await login(http, sso)
    desktop = await qr_login(http, phone["access_token"], dpop_jkt=key.jkt)
    assert desktop["token_type"] == "DPoP"
    access = desktop["access_token"]
    assert claims_of(access)["cnf"] == {"jkt": key.jkt}
    url = f"{sso.base_url}/v1/sessions"

    without_proof = await http.get("/v1/sessions", headers={"Authorization": f"DPoP {access}"})
    assert (without_proof.status_code, without_proof.json()["code"]) == (401, "invalid_dpop_proof")
    as_bearer = await http.get(
        "/v1/sessions", headers={"Authorization": f"Bearer {access}", "DPoP": key.proof("GET", url, access)}
    )
    assert as_bearer.status_code == 401
    thief = DpopKey()
    stolen = await http.get(
        "/v1/sessions", headers={"Authorization": f"DPoP {access}", "DPoP": thief.proof("GET", url, access)}
    )
    assert stolen.status_code == 401
    wrong_request = await http.get(
        "/v1/sessions", headers={"Authorization": f"DPoP {access}", "DPoP": key.proof("POST", url, access)}
    )
    assert wrong_request.status_code == 401

    proof = key.proof("GET", url, access)
    good = await http.get("/v1/sessions", headers={"Authorization": f"DPoP {access}", "DPoP": proof})
    assert good.status_code == 200, good.text
    replayed = await http.get("/v1/sessions", headers={"Authorization": f"DPoP {access}", "DPoP": proof})
    assert replayed.status_code == 401

    token_url = f"{sso.base_url}/v1/token"
    unproven = await refresh(http, desktop["refresh_token"], client_id="withholding-desktop")
    assert (unproven.status_code, unproven.json()["error"]) == (400, "invalid_dpop_proof")
    by_thief = await refresh(
        http, desktop["refresh_token"], client_id="withholding-desktop", DPoP=thief.proof("POST", token_url)
    )
    assert (by_thief.status_code, by_thief.json()["error"]) == (400, "invalid_dpop_proof")
    proven = await refresh(
        http, desktop["refresh_token"], client_id="withholding-desktop", DPoP=key.proof("POST", token_url)
    )
    assert proven.status_code == 200
    assert claims_of(proven.json()["access_token"])["cnf"] == {"jkt": key.jkt}


async def test_a_stale_proof_is_refused(http: httpx.AsyncClient, sso: ThreadedGateway, tmp_path: Path) -> None:
    key = DpopKey()
    phone = await login(http, sso)
    desktop = await qr_login(http, phone["access_token"], dpop_jkt=key.jkt)
    access = desktop["access_token"]
    old = key.proof("GET", f"{sso.base_url}/v1/sessions", access, iat=int(time.time()) - 600)
    response = await http.get("/v1/sessions", headers={"Authorization": f"DPoP {access}", "DPoP": old})
    assert response.status_code == 401


@pytest.mark.anyio
async def test_a_failing_session_end_listener_keeps_neither_the_others_nor_the_children_from_ending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The listeners run after the session is already ended: one that fails (the feed's store node down)
    is logged, and the next listener (a relying party's logout token) and the children's ends still run."""
    from gateway.settings import Settings
    from gateway.state.memory import MemoryStore
    from gateway.tokens.issuer import TokenIssuer
    from gateway.tokens.keys import KeyFile
    from gateway.tokens.sessions import SessionManager
    from tests.support.schemas import jwt_parts

    settings = Settings(keys_file=str(tmp_path / "keys.json"))
    store = MemoryStore()
    manager = SessionManager(settings, store, TokenIssuer(settings, KeyFile(settings.keys_file, "ES256")))
    heard: list[str] = []

    async def failing(sid: str, session: dict[str, str]) -> None:
        raise ConnectionError("the feed's node is down")

    async def recording(sid: str, session: dict[str, str]) -> None:
        heard.append(sid)

    manager.on_end(failing)
    manager.on_end(recording)

    def sid_of(tokens: Any) -> str:
        sid: str = jwt_parts(tokens["access_token"])[1]["sid"]
        return sid

    parent = sid_of(await manager.start(subject="p_1", client_id="mobile-app", amr=["pwd"]))
    child = sid_of(await manager.start(subject="p_1", client_id="withholding-desktop", amr=["qr"], parent=parent))
    assert await manager.end(parent)
    assert heard == [parent, child]
    assert await manager.alive(child) is None
    assert "failing failed: ConnectionError" in caplog.text
