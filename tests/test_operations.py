"""What operators rely on: health, readiness, metrics, request ids, and logs without secrets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import new_identity
from tests.support.accounts import fresh_ip, login, solved_captcha
from tests.support.clients import bearer, close_code, mint, next_message, open_events, phone_login
from tests.support.gateway_server import GatewayProcess, ThreadedGateway, free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def logged_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    port = free_port()
    env = {
        "QRGATE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "QRGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}",
        "QRGATE_KEYS_FILE": str(tmp_path / "keys.json"),
        "QRGATE_ARGON2_MEMORY_KIB": "1024",
        "QRGATE_ARGON2_TIME_COST": "1",
        "QRGATE_LOG_LEVEL": "info",
        "QRGATE_CAPTCHA_TEST_ANSWER": "K7MX2P",
    }
    server = GatewayProcess(env, port, tmp_path / "gateway.log").start()
    yield server
    server.stop()


async def test_health_readiness_and_request_ids(gateway: ThreadedGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"store": "ok", "database": "ok", "keys": "ok", "draining": "no"}
        echoed = await http.get("/healthz", headers={"X-Request-ID": "req-12345678"})
        assert echoed.headers["x-request-id"] == "req-12345678"
        made = await http.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
        assert made.headers["x-request-id"] != "bad id with spaces"
        assert len(made.headers["x-request-id"]) == 16


async def test_metrics_count_a_login(gateway: ThreadedGateway, make_person: object) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url) as http:
        before = (await http.get("/metrics")).text
        person = make_person()  # type: ignore[operator]
        phone = await phone_login(http, person)
        minted = await mint(http)
        ws = await open_events(minted)
        await next_message(ws)
        await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
        await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
        await next_message(ws)
        await next_message(ws)
        assert await close_code(ws) == 1000
        after = (await http.get("/metrics")).text

    def value(text: str, sample: str) -> float:
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    for event in ("mint", "scan", "confirm", "deliver"):
        sample = f'qrgate_qr_events_total{{event="{event}"}}'
        assert value(after, sample) >= value(before, sample) + 1, event
    assert (
        value(after, "qrgate_confirm_to_push_seconds_count")
        >= value(before, "qrgate_confirm_to_push_seconds_count") + 1
    )
    assert 'qrgate_http_request_duration_seconds_count{method="POST",route="/v1/qr/{qr_id}/scan",status="2xx"}' in after
    assert "qrgate_waiting_websockets" in after


async def test_logs_are_json_and_hold_no_secrets(logged_gateway: GatewayProcess, tmp_path: Path) -> None:
    identity = new_identity()
    env = {**logged_gateway.env}
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "admin", "person", "add", "--login-name", identity["login_name"],
         "--phone", identity["phone"], "--name", identity["name"], "--id-type", "resident_id",
         "--id-number", identity["id_number"], "--password-stdin"],
        input=identity["password"] + "\n", env=env, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    secrets: list[str] = [identity["password"], identity["id_number"], identity["phone"]]
    async with httpx.AsyncClient(base_url=logged_gateway.base_url) as http:
        wrong = await http.post(
            "/v1/login/password",
            json={"identifier": identity["phone"], "password": "Wrong-pass9", "client_id": "mobile-app"},
        )
        assert wrong.status_code == 401
        secrets.append("Wrong-pass9")
        captcha = (await http.post("/v1/captcha")).json()
        login = await http.post(
            "/v1/login/password",
            json={
                "identifier": identity["phone"],
                "password": identity["password"],
                "client_id": "mobile-app",
                "captcha_id": captcha["captcha_id"],
                "captcha_answer": "WRONG1",
            },
        )
        assert login.status_code == 400
        captcha = (await http.post("/v1/captcha")).json()
        answered = await http.post(
            "/v1/login/password",
            json={
                "identifier": identity["login_name"],
                "password": identity["password"],
                "client_id": "mobile-app",
                "captcha_id": captcha["captcha_id"],
                "captcha_answer": "k7mx2p",
            },
        )
        assert answered.status_code == 200, answered.text
        phone = answered.json()
        secrets.append("K7MX2P")
        minted = await mint(http)
        secrets += [phone["access_token"], phone["refresh_token"], minted["waiter_token"]]
        ws = await open_events(minted)
        await next_message(ws)
        await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone["access_token"]))
        await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone["access_token"]))
        await next_message(ws)
        confirmed = await next_message(ws)
        secrets += [confirmed["token"]["access_token"], confirmed["token"]["refresh_token"]]
        refreshed = await http.post(
            "/v1/token",
            data={"grant_type": "refresh_token", "refresh_token": phone["refresh_token"], "client_id": "mobile-app"},
        )
        secrets.append(refreshed.json()["refresh_token"])
    logged_gateway.stop()
    text = logged_gateway.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(line.get("route") == "/v1/qr/{qr_id}/confirm" for line in lines)
    assert all("request_id" in line for line in lines if line.get("logger") == "qrgate.access")
    for secret in secrets:
        assert secret not in text, f"a secret leaked into the log: {secret[:6]}..."


def test_settings_reference_is_in_sync() -> None:
    from gateway import settings_reference

    document = settings_reference.DOC.read_text()
    assert settings_reference.render(document) == document, "run: python -m gateway.settings_reference --write"
    from gateway.settings import Settings

    for name in Settings.model_fields:
        assert f"`QRGATE_{name.upper()}`" in document


async def test_password_logins_and_lockouts_are_counted(gateway: ThreadedGateway, make_person: object) -> None:
    """The Grafana panels' series move: every password-login outcome, and the lockout it ends in."""

    def value(text: str, sample: str) -> float:
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    person = make_person()  # type: ignore[operator]
    async with httpx.AsyncClient(base_url=gateway.base_url) as http:
        before = (await http.get("/metrics")).text
        ip = fresh_ip()
        await login(http, person["phone"], "Wrong-pass1", ip)  # invalid
        await login(http, person["phone"], "Wrong-pass1", ip)  # captcha_required
        for _ in range(4):  # invalid x3, then locked
            await login(http, person["phone"], "Wrong-pass1", ip, **await solved_captcha(http, ip))
        await login(http, make_person()["phone"], "Passw0rd!x", fresh_ip())  # type: ignore[operator]  # success
        after = (await http.get("/metrics")).text
    for outcome, count in (("invalid", 4), ("captcha_required", 1), ("locked", 1), ("success", 1)):
        sample = f'qrgate_password_logins_total{{outcome="{outcome}"}}'
        assert value(after, sample) - value(before, sample) == count, outcome
    lockouts = 'qrgate_lockouts_total{scope="login"}'
    assert value(after, lockouts) - value(before, lockouts) == 1
