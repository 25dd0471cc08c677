"""QR login v1 end to end, through a real uvicorn server, with the websockets and httpx clients."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from gateway.tokens.verifier import AccessTokenVerifier, RemoteJwks
from tests.support.clients import bearer, close_code, mint, next_message, open_events, phone_login
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

pytestmark = pytest.mark.anyio
Person = Callable[..., dict[str, str]]


@pytest.fixture(scope="module")
def quick_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    """QR codes that expire in 5 s and a hello deadline of half a second."""
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("quick"), port, qr_ttl=5, hello_timeout=0.5)
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


async def test_full_flow_over_websocket_delivers_verifiable_tokens(
    gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Person
) -> None:
    person = make_person()
    phone = await phone_login(http, person)
    minted = await mint(http)
    assert minted["qr_content"] == f"{gateway.base_url}/q/{minted['qr_id']}"
    ws = await open_events(minted)
    assert await next_message(ws) == {"type": "state", "state": "pending", "expires_in": 120}

    scan = await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
    assert scan.status_code == 200
    assert scan.json()["device_name"] == "PC-01"
    assert scan.json()["proximity"] == "same_network"
    assert await next_message(ws) == {"type": "scanned", "scanner": {"display_name": "张*"}}

    assert (await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))).status_code == 204
    confirmed = await next_message(ws)
    assert confirmed["type"] == "confirmed"
    assert await close_code(ws) == 1000

    token = confirmed["token"]
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 600
    assert len(token["refresh_token"]) >= 43
    # A downstream service's view: keys fetched over HTTP from the published JWKS.
    jwks = RemoteJwks(f"{gateway.base_url}/.well-known/jwks.json")
    try:
        verifier = AccessTokenVerifier(jwks, issuer=gateway.base_url, audience="qrgate-sso")
        claims = await verifier.verify(token["access_token"])
    finally:
        await jwks.aclose()
    assert claims["sub"] == person["id"]
    assert claims["amr"] == ["qr"]
    assert claims["client_id"] == "withholding-desktop"
    assert "cnf" not in claims
    assert person["id_number"] not in token["access_token"]


async def test_full_flow_over_long_poll_delivers_once(http: httpx.AsyncClient, make_person: Person) -> None:
    person = make_person()
    phone = await phone_login(http, person)
    minted = await mint(http)
    state_url = f"/v1/qr/{minted['qr_id']}/state"
    waiter = bearer(minted["waiter_token"])
    first = await http.get(state_url, headers=waiter)
    assert first.json() == {"state": "pending", "expires_in": 120}

    waiting = asyncio.create_task(http.get(state_url, params={"wait": 10}, headers=waiter))
    await asyncio.sleep(0.2)
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
    woke = await waiting
    assert woke.json()["state"] == "scanned"
    assert woke.json()["scanner"] == {"display_name": "张*"}

    waiting = asyncio.create_task(http.get(state_url, params={"wait": 10}, headers=waiter))
    await asyncio.sleep(0.2)
    await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
    delivered = (await waiting).json()
    assert delivered["state"] == "confirmed"
    assert set(delivered["token"]) == {"access_token", "token_type", "expires_in", "refresh_token"}

    again = (await http.get(state_url, headers=waiter)).json()
    assert again["state"] == "delivered"
    assert "token" not in again
    # The WebSocket shares the one delivery: it is refused afterwards.
    assert await close_code(await open_events(minted)) == 4409


async def test_long_poll_with_since_never_holds_a_change_back(http: httpx.AsyncClient, make_person: Person) -> None:
    """A change between two polls is answered at once when the client says what it saw last."""
    person = make_person()
    phone = await phone_login(http, person)
    minted = await mint(http)
    state_url = f"/v1/qr/{minted['qr_id']}/state"
    waiter = bearer(minted["waiter_token"])
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))  # while no poll is open
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await http.get(state_url, params={"wait": 10, "since": "pending"}, headers=waiter)
    assert answer.json()["state"] == "scanned"
    assert loop.time() - started < 5  # not after the 10 s wait
    # The same state as `since`: it waits for the next change, then answers it (the tokens, once).
    waiting = asyncio.create_task(http.get(state_url, params={"wait": 10, "since": "scanned"}, headers=waiter))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
    delivered = (await waiting).json()
    assert (delivered["state"], "token" in delivered) == ("confirmed", True)
    # `since` naming a state it never was in still answers the truth at once.
    after = await http.get(state_url, params={"wait": 10, "since": "pending"}, headers=waiter)
    assert after.json()["state"] == "delivered"
    bad = await http.get(state_url, params={"since": "nonsense"}, headers=waiter)
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_request")


async def test_wrong_waiter_token_is_refused(http: httpx.AsyncClient) -> None:
    minted = await mint(http)
    assert await close_code(await open_events(minted, waiter_token="x" * 43)) == 4401
    response = await http.get(f"/v1/qr/{minted['qr_id']}/state", headers=bearer("x" * 43))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_waiter_token"
    other = await mint(http)
    # A real waiter token of another QR does not open this one either.
    assert await close_code(await open_events(minted, waiter_token=other["waiter_token"])) == 4401


async def test_unknown_qr_closes_4404(gateway: ThreadedGateway) -> None:
    ws = await open_events({"events_url": f"{gateway.ws_url}/v1/qr/{'A' * 22}/events", "waiter_token": "x"})
    assert await close_code(ws) == 4404


@pytest.mark.parametrize(
    "hello",
    [b"not json", json.dumps({"type": "hi"}), json.dumps({"type": "hello"}), json.dumps(["hello"])],
)
async def test_malformed_hello_closes_4400(http: httpx.AsyncClient, hello: str | bytes) -> None:
    minted = await mint(http)
    async with connect(minted["events_url"]) as ws:
        await ws.send(hello)
        assert await close_code(ws) == 4400


async def test_missing_hello_closes_4400_after_the_deadline(quick_gateway: ThreadedGateway) -> None:
    async with httpx.AsyncClient(base_url=quick_gateway.base_url) as client:
        minted = await mint(client)
    async with connect(minted["events_url"]) as ws:
        assert await close_code(ws, timeout=3) == 4400


async def test_oversized_message_closes_1009(http: httpx.AsyncClient) -> None:
    minted = await mint(http)
    async with connect(minted["events_url"], max_size=None) as ws:
        await ws.send("x" * 10_000)
        assert await close_code(ws) == 1009


async def test_reconnect_before_delivery_gets_current_state_first(http: httpx.AsyncClient, make_person: Person) -> None:
    phone = await phone_login(http, make_person())
    minted = await mint(http)
    ws = await open_events(minted)
    await next_message(ws)
    await ws.close()
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
    # Scanned while the desktop was away: the new connection learns it first thing.
    ws = await open_events(minted)
    first = await next_message(ws)
    assert first["type"] == "state"
    assert first["state"] == "scanned"
    assert first["scanner"] == {"display_name": "张*"}
    await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
    assert (await next_message(ws))["type"] == "confirmed"
    assert await close_code(ws) == 1000
    # ...and after delivery, a reconnect is told so.
    assert await close_code(await open_events(minted)) == 4409


async def test_reconnect_after_confirm_gets_state_then_token(http: httpx.AsyncClient, make_person: Person) -> None:
    phone = await phone_login(http, make_person())
    minted = await mint(http)
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
    await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
    ws = await open_events(minted)
    assert (await next_message(ws))["state"] == "confirmed"
    assert (await next_message(ws))["type"] == "confirmed"
    assert await close_code(ws) == 1000


async def test_two_phones_race_to_scan(http: httpx.AsyncClient, make_person: Person) -> None:
    phones = [await phone_login(http, make_person()) for _ in range(2)]
    minted = await mint(http)
    answers = await asyncio.gather(
        *(http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(token)) for token in phones)
    )
    assert sorted(a.status_code for a in answers) == [200, 409]
    loser = next(a for a in answers if a.status_code == 409)
    assert loser.json()["code"] == "qr_already_scanned"


async def test_fifty_concurrent_confirms_one_wins(gateway: ThreadedGateway, make_person: Person) -> None:
    limits = httpx.Limits(max_connections=60)
    async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits, timeout=10) as http:
        phone = await phone_login(http, make_person())
        minted = await mint(http)
        ws = await open_events(minted)
        await next_message(ws)
        await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
        answers = await asyncio.gather(
            *(http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone)) for _ in range(50))
        )
        codes = [a.status_code for a in answers]
        assert codes.count(204) == 1
        assert {a.json()["code"] for a in answers if a.status_code != 204} == {"qr_wrong_state"}
        assert (await next_message(ws))["type"] == "scanned"
        assert (await next_message(ws))["type"] == "confirmed"
        assert await close_code(ws) == 1000


@pytest.mark.slow  # waits for a 5 s QR code to expire
async def test_expiry_is_pushed(quick_gateway: ThreadedGateway, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=quick_gateway.base_url) as client:
        minted = await mint(client)
        ws = await open_events(minted)
        assert (await next_message(ws))["expires_in"] == 5
        assert await next_message(ws, timeout=8) == {"type": "expired"}
        assert await close_code(ws) == 1000
        image = await client.get(f"/v1/qr/{minted['qr_id']}.svg")
        assert image.status_code == 404
        state = await client.get(f"/v1/qr/{minted['qr_id']}/state", headers=bearer(minted["waiter_token"]))
        assert state.json() == {"state": "expired", "expires_in": 0}


@pytest.mark.slow  # waits for a 5 s QR code to expire
async def test_scan_after_expiry_is_gone(quick_gateway: ThreadedGateway) -> None:
    async with httpx.AsyncClient(base_url=quick_gateway.base_url) as client:
        identity = __import__("tests.conftest", fromlist=["new_identity"]).new_identity()
        await asyncio.to_thread(lambda: quick_gateway.add_person(**identity))
        phone = await phone_login(client, identity)
        minted = await mint(client)
        await asyncio.sleep(5.2)
        response = await client.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
        assert response.status_code == 410
        assert response.json()["code"] == "qr_expired"


async def test_phone_cancel_is_pushed(http: httpx.AsyncClient, make_person: Person) -> None:
    phone = await phone_login(http, make_person())
    minted = await mint(http)
    ws = await open_events(minted)
    await next_message(ws)
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
    assert (await next_message(ws))["type"] == "scanned"
    assert (await http.post(f"/v1/qr/{minted['qr_id']}/cancel", headers=bearer(phone))).status_code == 204
    assert await next_message(ws) == {"type": "cancelled"}
    assert await close_code(ws) == 1000
    late = await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
    assert late.status_code == 409
    assert late.json()["code"] == "qr_wrong_state"


async def test_desktop_abandon_is_pushed_and_needs_the_waiter_token(http: httpx.AsyncClient) -> None:
    minted = await mint(http)
    ws = await open_events(minted)
    await next_message(ws)
    refused = await http.delete(f"/v1/qr/{minted['qr_id']}", headers=bearer("y" * 43))
    assert refused.status_code == 401
    assert (await http.delete(f"/v1/qr/{minted['qr_id']}", headers=bearer(minted["waiter_token"]))).status_code == 204
    assert await next_message(ws) == {"type": "cancelled"}
    assert await close_code(ws) == 1000


async def test_only_the_scanner_may_confirm_or_cancel(http: httpx.AsyncClient, make_person: Person) -> None:
    scanner, other = [await phone_login(http, make_person()) for _ in range(2)]
    minted = await mint(http)
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(scanner))
    for action in ("confirm", "cancel"):
        response = await http.post(f"/v1/qr/{minted['qr_id']}/{action}", headers=bearer(other))
        assert response.status_code == 403
        assert response.json()["code"] == "not_scanner"
    state = await http.get(f"/v1/qr/{minted['qr_id']}/state", headers=bearer(minted["waiter_token"]))
    assert state.json()["state"] == "scanned"


async def test_confirm_before_scan_is_wrong_state(http: httpx.AsyncClient, make_person: Person) -> None:
    phone = await phone_login(http, make_person())
    minted = await mint(http)
    response = await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
    assert response.status_code == 409
    assert response.json()["code"] == "qr_wrong_state"


async def test_only_mobile_app_tokens_may_scan(http: httpx.AsyncClient, make_person: Person) -> None:
    person = make_person()
    web = await phone_login(http, person, client_id="web")
    minted = await mint(http)
    response = await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(web))
    assert response.status_code == 403
    assert response.json()["code"] == "client_not_allowed"
    for headers in ({}, bearer("not.a.token"), {"Authorization": "Basic abc"}):
        response = await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"


async def test_only_desktop_clients_may_mint(http: httpx.AsyncClient) -> None:
    refused = await http.post("/v1/qr", json={"client_id": "mobile-app"})
    assert refused.status_code == 403
    unknown = await http.post("/v1/qr", json={"client_id": "nobody"})
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "unknown_client"


async def test_dpop_jkt_binds_the_delivered_tokens(http: httpx.AsyncClient, make_person: Person) -> None:
    phone = await phone_login(http, make_person())
    jkt = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    minted = await mint(http, dpop_jkt=jkt)
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
    await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
    answer = (await http.get(f"/v1/qr/{minted['qr_id']}/state", headers=bearer(minted["waiter_token"]))).json()
    assert answer["token"]["token_type"] == "DPoP"
    payload = answer["token"]["access_token"].split(".")[1]
    claims: dict[str, Any] = json.loads(__import__("base64").urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["cnf"] == {"jkt": jkt}


async def test_images_render_while_pending(http: httpx.AsyncClient) -> None:
    minted = await mint(http)
    svg = await http.get(f"/v1/qr/{minted['qr_id']}.svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg")
    png = await http.get(f"/v1/qr/{minted['qr_id']}.png")
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert (await http.get(f"/v1/qr/{minted['qr_id']}.gif")).status_code == 404
    assert (await http.get(f"/v1/qr/{'B' * 22}.svg")).status_code == 404


async def test_camera_landing_page_reveals_nothing(http: httpx.AsyncClient) -> None:
    minted = await mint(http)
    page = await http.get(f"/q/{minted['qr_id']}")
    assert page.status_code == 200
    assert "App" in page.text
    assert minted["waiter_token"] not in page.text
    assert "pending" not in page.text
    unknown = await http.get(f"/q/{'C' * 22}")
    assert unknown.text == page.text


def unverified_claims(token: str) -> dict[str, Any]:
    """A token's claims, read without a check (the gateway issued them a moment ago)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def test_a_qr_login_keeps_the_phone_s_auth_time_and_ends_with_its_session(
    http: httpx.AsyncClient, make_person: Person
) -> None:
    """Scanning is not authenticating again: the desktop's session keeps when the person last
    authenticated on the phone (so a QR login cannot pass for a fresh login where one is required),
    and is made from the phone's session, so it ends when that one ends."""
    person = make_person()
    phone = await phone_login(http, person)
    phone_claims = unverified_claims(phone)
    await asyncio.sleep(1.1)  # so that "now" and the phone's login differ
    minted = await mint(http)
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
    await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
    state = await http.get(f"/v1/qr/{minted['qr_id']}/state", headers=bearer(minted["waiter_token"]))
    tokens = state.json()["token"]
    desktop = unverified_claims(tokens["access_token"])
    assert desktop["auth_time"] == phone_claims["auth_time"] < desktop["iat"]
    assert desktop["amr"] == ["qr"]
    assert desktop["sid"] != phone_claims["sid"]
    # The phone signs out: the desktop's session, made from it, ends too.
    assert (await http.post("/v1/logout", headers=bearer(phone))).status_code == 204
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": "withholding-desktop",
    }
    assert (await http.post("/v1/token", data=refresh)).json()["error"] == "invalid_grant"
    sessions = await http.get("/v1/sessions", headers=bearer(tokens["access_token"]))
    assert (sessions.status_code, sessions.json()["code"]) == (401, "session_ended")


async def test_minting_is_limited_per_address(tmp_path: Path) -> None:
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path, port, qr_mint_ip_max=3, qr_mint_ip_window=60), port).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            hall = {"X-Forwarded-For": "203.0.113.7"}
            body = {"client_id": "withholding-desktop"}
            minted = [await http.post("/v1/qr", json=body, headers=hall) for _ in range(3)]
            assert [m.status_code for m in minted] == [201, 201, 201]
            refused = await http.post("/v1/qr", json=body, headers=hall)
            assert (refused.status_code, refused.json()["code"]) == (429, "too_many_requests")
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            elsewhere = await http.post("/v1/qr", json=body, headers={"X-Forwarded-For": "203.0.113.8"})
            assert elsewhere.status_code == 201
    finally:
        server.stop()
