"""The accounts counters on the production store: a gateway on a private redis-server, where
lockout, captchas, throttles and SMS limits must hold exactly as on the embedded memory store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.state.redis import RedisStore
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.keys import KeyFile
from gateway.tokens.sessions import SessionManager
from tests.conftest import new_identity
from tests.support.accounts import fresh_ip, identity_fields, login, sms_challenge, sms_codes, solved_captcha
from tests.support.clients import bearer, mint, next_message, open_events
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings
from tests.support.redis_procs import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def redis_gateway(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[ThreadedGateway]:
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path, port, redis_url=redis_server.url), port).start()
    yield server
    server.stop()


async def test_lockout_race_captchas_and_sms_limits_on_redis(redis_gateway: ThreadedGateway) -> None:
    person = new_identity()
    redis_gateway.add_person(**person)
    limits = httpx.Limits(max_connections=60)
    async with httpx.AsyncClient(base_url=redis_gateway.base_url, timeout=30, limits=limits) as http:
        ip = fresh_ip()
        captchas = [await solved_captcha(http, ip) for _ in range(50)]
        answers = await asyncio.gather(
            *(login(http, person["phone"], f"Wrong-pass{i}", ip, **captchas[i]) for i in range(50))
        )
        statuses = [a.status_code for a in answers]
        assert (statuses.count(401), statuses.count(423)) == (4, 46)
        # Every captcha was consumed, right or wrong.
        reused = await login(http, person["login_name"], person["password"], ip, **captchas[0])
        assert reused.status_code == 423  # locked first; the captcha is spent either way
        with sms_codes() as codes:
            body = {"purpose": "reset_password", "identity": identity_fields(person)}
            challenge, code = await sms_challenge(http, codes, body)
            again = {**body, **await solved_captcha(http)}
            too_soon = await http.post("/v1/sms/challenges", json=again, headers=fresh_ip())
            assert (too_soon.status_code, too_soon.json()["code"]) == (429, "sms_too_soon")
            forgot = {**identity_fields(person), "sms_challenge_id": challenge, "sms_code": code}
            ticket = (await http.post("/v1/password/forgot", json=forgot)).json()["reset_ticket"]
        done = await http.post("/v1/password/reset", json={"reset_ticket": ticket, "new_password": "N3w-Secret!"})
        assert done.status_code == 204
        assert (await login(http, person["phone"], "N3w-Secret!", fresh_ip())).status_code == 200


async def test_a_phone_session_from_before_names_were_kept_still_shows_the_name(
    redis_gateway: ThreadedGateway, redis_server: RedisServer
) -> None:
    """Sessions now keep the person's masked name (so a scan needs no directory read); a phone
    session started before that (no `display_name`) falls back to the directory."""
    person = new_identity()
    person_id = redis_gateway.add_person(**person)
    settings = redis_gateway.settings
    store = RedisStore.from_url(redis_server.url)
    try:
        sessions = SessionManager(
            settings, store, TokenIssuer(settings, KeyFile(settings.keys_file, settings.signing_alg))
        )
        old_style = await sessions.start(subject=person_id, client_id="mobile-app", amr=["pwd"])
        sid = old_style["refresh_token"].partition(".")[0]
        assert (await store.get_session(sid) or {}).get("display_name") == ""
    finally:
        await store.close()
    async with httpx.AsyncClient(base_url=redis_gateway.base_url, timeout=30) as http:
        minted = await mint(http)
        ws = await open_events(minted)
        assert (await next_message(ws))["type"] == "state"
        scan = await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(old_style["access_token"]))
        assert scan.status_code == 200, scan.text
        assert await next_message(ws) == {"type": "scanned", "scanner": {"display_name": "张*"}}
        await ws.close()
