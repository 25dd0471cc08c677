"""Helpers for the accounts tests: captchas, SMS codes from the dev sender's log, hall staff, fake
HTTP services (a tiny Starlette app under uvicorn on a free port), and fresh client addresses."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import uvicorn
from starlette.applications import Starlette

from gateway import cli
from gateway.accounts.registration import AGREEMENT_VERSION
from gateway.directory.audit import AuditLog
from gateway.directory.db import create_engine
from tests.support.gateway_server import CAPTCHA_ANSWER, ThreadedGateway, free_port

_addresses = itertools.count(1)


def fresh_ip() -> dict[str, str]:
    """An X-Forwarded-For header naming a client address no other test uses (the test server trusts
    127.0.0.1 as a proxy), so per-IP throttles of one test do not touch another. No traffic goes there."""
    n = next(_addresses)
    return {"X-Forwarded-For": f"198.51.{100 + n // 250}.{n % 250 + 1}"}


async def solved_captcha(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> dict[str, str]:
    response = await http.post("/v1/captcha", headers=headers or {})
    assert response.status_code == 201, response.text
    return {"captcha_id": response.json()["captcha_id"], "captcha_answer": CAPTCHA_ANSWER}


class SmsCodes(logging.Handler):
    """Reads the codes the dev SMS sender writes to the server log (by challenge id)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.codes: dict[str, str] = {}
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        challenge = getattr(record, "sms_challenge_id", None)
        if challenge is not None:
            self.codes[challenge] = str(getattr(record, "sms_code", ""))

    def code_for(self, challenge_id: str) -> str:
        deadline = time.monotonic() + 5
        while challenge_id not in self.codes:
            assert time.monotonic() < deadline, f"no SMS logged for {challenge_id}"
            time.sleep(0.01)
        return self.codes[challenge_id]


@contextmanager
def sms_codes() -> Iterator[SmsCodes]:
    handler = SmsCodes()
    logger = logging.getLogger("qrgate.sms")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class FakeService:
    """A Starlette app served by uvicorn in a thread on a free port (a provider the gateway calls)."""

    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> FakeService:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake service did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = True  # do not wait for a request a test left hanging ("slow" verdicts)
        self._thread.join(timeout=10)


def grant_staff(gateway: ThreadedGateway, login_name: str) -> str:
    """Through the same code path as `qrgate admin staff grant` (on its own event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, cli.grant_staff(gateway.settings, login_name)).result()


def audit_kinds(database_url: str, subject: str) -> list[str]:
    """The kinds of the audit events of `subject`, oldest first (read with an engine of our own)."""

    async def read() -> list[str]:
        engine = create_engine(database_url)
        try:
            return [event.kind for event in reversed(await AuditLog(engine).events(subject))]
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, read()).result()


async def login(
    http: httpx.AsyncClient, identifier: str, password: str, headers: dict[str, str] | None = None, /, **extra: str
) -> httpx.Response:
    """Password login as client `web`; `extra` carries captcha_id and captcha_answer."""
    body = {"identifier": identifier, "password": password, "client_id": "web", **extra}
    return await http.post("/v1/login/password", json=body, headers=headers or {})


async def access_token(http: httpx.AsyncClient, person: dict[str, str]) -> str:
    response = await login(http, person["login_name"], person["password"], fresh_ip())
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def identity_fields(person: dict[str, str]) -> dict[str, str]:
    fields = {k: person[k] for k in ("id_type", "id_number", "name")}
    if "nationality" in person:
        fields["nationality"] = person["nationality"]
    return fields


async def issue_registration_code(http: httpx.AsyncClient, staff: dict[str, str], person: dict[str, str]) -> str:
    response = await http.post("/v1/admin/registration-codes", json=identity_fields(person), headers=staff)
    assert response.status_code == 201, response.text
    code: str = response.json()["registration_code"]
    return code


async def sms_challenge(
    http: httpx.AsyncClient, codes: SmsCodes, body: Mapping[str, object], headers: dict[str, str] | None = None
) -> tuple[str, str]:
    """Request an SMS code and read it from the dev sender's log: (challenge id, code). A forgotten-
    password code needs a captcha first: one is solved here unless `body` carries one."""
    sent = dict(body)
    if sent.get("purpose") == "reset_password" and "captcha_id" not in sent:
        sent.update(await solved_captcha(http))
    response = await http.post("/v1/sms/challenges", json=sent, headers=headers or fresh_ip())
    assert response.status_code == 201, response.text
    challenge: str = response.json()["challenge_id"]
    return challenge, codes.code_for(challenge)


async def register(
    http: httpx.AsyncClient, codes: SmsCodes, staff: dict[str, str], person: dict[str, str]
) -> dict[str, object]:
    """The whole hall-code registration of `person` (identity, login name, phone, password)."""
    code = await issue_registration_code(http, staff, person)
    ip = fresh_ip()
    started = await http.post(
        "/v1/registrations",
        json={
            "method": "hall_code",
            "registration_code": code,
            "agreement_version": AGREEMENT_VERSION,
            **identity_fields(person),
        },
        headers=ip,
    )
    assert started.status_code == 201, started.text
    challenge, sms = await sms_challenge(http, codes, {"purpose": "register", "phone": person["phone"]}, ip)
    completed = await http.post(
        f"/v1/registrations/{started.json()['registration_id']}/complete",
        json={
            "registration_token": started.json()["registration_token"],
            "login_name": person["login_name"],
            "password": person["password"],
            "phone": person["phone"],
            "sms_challenge_id": challenge,
            "sms_code": sms,
            "household_region": person.get("household_region", "110105"),
        },
        headers=ip,
    )
    assert completed.status_code == 201, completed.text
    body: dict[str, object] = completed.json()
    return body


async def new_staff(http: httpx.AsyncClient, gateway: ThreadedGateway, person: dict[str, str]) -> dict[str, str]:
    """Make `person` hall staff (as the CLI does) and return their Authorization header."""
    grant_staff(gateway, person["login_name"])
    return bearer(await access_token(http, person))
