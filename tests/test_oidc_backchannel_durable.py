"""Back-channel logout tokens survive the gateway: a logout while the relying party's endpoint is down
leaves the delivery queued in Redis; the gateway process is stopped (SIGTERM, or kill -9), a new one is
started, the endpoint comes up, and it receives the logout token, which verifies and names the
browser session that ended.

Real parts: `qrgate serve` subprocesses on one port (one issuer), a private redis-server, a SQLite
database, the relying party's endpoint a small uvicorn app started late; the person signs in by
password on the sign-in page's HTTP routes, and the relying party logs out with RP-initiated logout."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from gateway.cli import add_person_record
from gateway.directory.db import create_engine, migrate
from gateway.oidc import id_tokens
from gateway.oidc.clients import RelyingParties, new_party
from gateway.oidc.requests import s256
from gateway.oidc.signin import csrf_token
from gateway.settings import Settings
from tests.conftest import new_identity
from tests.support.accounts import FakeService
from tests.support.gateway_server import GatewayProcess, free_port, make_settings
from tests.support.oidc import LogoutReceiver
from tests.support.redis_procs import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CLIENT = "durable-rp"
REDIRECT = "https://durable-rp.example/cb"
WITHIN = 20.0  # s from the endpoint coming up to the token received (backoff is at most a few s by then)


def in_own_loop(work: Any) -> Any:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


async def register(settings: Settings, backchannel_uri: str) -> None:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        party = new_party(CLIENT, name="Durable RP", redirect_uris=[REDIRECT], backchannel_logout_uri=backchannel_uri)
        await RelyingParties(engine, refresh=0).add(party)
    finally:
        await engine.dispose()


class Gateways:
    """`qrgate serve` processes, one after the other, on one port (so one issuer)."""

    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.settings = make_settings(tmp, self.port, redis_url=redis_url)
        self.env = {
            "QRGATE_PUBLIC_URL": self.settings.issuer,
            "QRGATE_DATABASE_URL": self.settings.database_url,
            "QRGATE_KEYS_FILE": self.settings.keys_file,
            "QRGATE_REDIS_URL": redis_url,
            "QRGATE_ARGON2_MEMORY_KIB": "1024",
            "QRGATE_ARGON2_TIME_COST": "1",
            "QRGATE_UNITS_MOUNT": "false",
            "QRGATE_BACKCHANNEL_LOGOUT_TIMEOUT": "1",
            "QRGATE_BACKCHANNEL_LOGOUT_RETRIES": "12",  # backoff 1, 2, 4 ... 60 s: minutes of patience
            "QRGATE_BACKCHANNEL_LOGOUT_POLL": "0.2",
        }
        self.started: list[GatewayProcess] = []

    def start(self) -> GatewayProcess:
        process = GatewayProcess(self.env, self.port, self.tmp / f"gateway-{len(self.started)}.log").start()
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


@pytest.fixture
def gateways(tmp_path: Path, redis_server: RedisServer) -> Iterator[Gateways]:
    running = Gateways(tmp_path, redis_server.url)
    try:
        yield running
    finally:
        running.stop_all()


def sign_in_and_get_tokens(http: httpx.Client, login_name: str, password: str) -> dict[str, Any]:
    """/authorize, the sign-in page's password post, the code exchanged (a public client with PKCE)."""
    verifier = secrets.token_urlsafe(48)
    params = {
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid offline_access",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "state": "st",
        "nonce": "n0",
    }
    to_signin = http.get("/authorize", params=params)
    assert to_signin.status_code == 303, to_signin.text
    request_id = parse_qs(urlsplit(to_signin.headers["location"]).query)["request"][0]
    binding = to_signin.cookies["qrgate-signin"]
    signed_in = http.post(
        "/signin/password",
        data={
            "request": request_id,
            "csrf": csrf_token(binding, request_id),
            "identifier": login_name,
            "password": password,
        },
        headers={"Cookie": f"qrgate-signin={binding}"},
    )
    assert signed_in.status_code == 200, signed_in.text
    code = parse_qs(urlsplit(signed_in.json()["redirect"]).query)["code"][0]
    exchanged = http.post(
        "/v1/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            "client_id": CLIENT,
        },
    )
    assert exchanged.status_code == 200, exchanged.text
    tokens: dict[str, Any] = exchanged.json()
    return tokens


@pytest.mark.parametrize("stop", ["SIGTERM", "kill -9"])
def test_a_queued_logout_token_reaches_the_relying_party_after_the_gateway_restarts(
    gateways: Gateways, stop: str
) -> None:
    recorder = LogoutReceiver()
    endpoint = FakeService(recorder.app())  # its port is chosen now; it starts listening only later
    in_own_loop(register(gateways.settings, f"{endpoint.url}/bc/durable"))
    person = new_identity()
    in_own_loop(add_person_record(gateways.settings, **{k: v for k, v in person.items() if k != "id"}))

    first = gateways.start()
    with httpx.Client(base_url=first.base_url, timeout=10) as http:
        tokens = sign_in_and_get_tokens(http, person["login_name"], person["password"])
        browser_sid = jwt.decode(tokens["id_token"], KeySet.import_key_set(http.get("/.well-known/jwks.json").json()),
                                 algorithms=["ES256", "EdDSA"]).claims["sid"]  # fmt: skip
        logged_out = http.get("/logout", params={"id_token_hint": tokens["id_token"]})  # RP-initiated
        assert logged_out.status_code == 200  # the "signed out" page: no redirect URI registered
        refreshed = http.post(
            "/v1/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": CLIENT},
        )
        assert refreshed.json()["error"] == "invalid_grant"  # the relying party's session did end
        time.sleep(1.5)  # the first try (to a closed port) has failed by now; the delivery waits in Redis
        jwks = http.get("/.well-known/jwks.json").json()

    if stop == "SIGTERM":
        assert first.terminate() in (0, -15)  # uvicorn re-raises the signal after its graceful shutdown
        log = (gateways.tmp / "gateway-0.log").read_text()
        assert "Application shutdown complete" in log
        assert "Traceback" not in log
    else:
        first.kill()
    assert recorder.received == []

    second = gateways.start()
    assert second.proc is not None
    assert first.proc is not None
    assert second.proc.pid != first.proc.pid
    with endpoint:
        deadline = time.monotonic() + WITHIN
        while not recorder.received:
            assert time.monotonic() < deadline, (gateways.tmp / "gateway-1.log").read_text()[-3000:]
            time.sleep(0.05)
    (received,) = recorder.received
    assert received.path == "/bc/durable"
    decoded = jwt.decode(received.logout_token, KeySet.import_key_set(jwks), algorithms=["ES256", "EdDSA"])
    assert decoded.header["typ"] == "logout+jwt"
    assert decoded.claims["iss"] == gateways.settings.issuer
    assert decoded.claims["aud"] == CLIENT
    assert decoded.claims["sid"] == browser_sid
    assert decoded.claims["events"] == {id_tokens.BACKCHANNEL_EVENT: {}}
    assert decoded.claims["exp"] > time.time()  # signed for this try, by the second process
