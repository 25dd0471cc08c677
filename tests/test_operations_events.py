"""Operators see brute force and its remedies (issue 15, item 7): every password login, captcha
failure, lockout (gateway and units service), unlock and password reset (forgotten password, hall,
the unit's officers) and QR outcome (confirmed, cancelled, expired) moves its series on /metrics and
writes its structured event. One real gateway (the units service mounted) driven over HTTP; the
events are read from its `qrgate.events` log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import new_identity
from tests.support.accounts import (
    bearer,
    fresh_ip,
    grant_staff,
    identity_fields,
    login,
    sms_challenge,
    sms_codes,
    solved_captcha,
)
from tests.support.clients import mint, phone_login
from tests.support.gateway_server import CAPTCHA_ANSWER, ThreadedGateway, free_port, make_settings
from tests.support.units import DECLARATION_PASSWORD, new_tin

pytestmark = pytest.mark.anyio
QR_TTL = 5  # seconds (the smallest allowed): one code is left to expire


class Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({k: v for k, v in record.__dict__.items() if not k.startswith("_")})

    def of(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == kind and all(r.get(k) == v for k, v in fields.items())]


@pytest.fixture(scope="module")
def ops_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("events"), port, qr_ttl=QR_TTL)
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


@pytest.fixture
def events() -> Iterator[Events]:
    handler, logger = Events(), logging.getLogger("qrgate.events")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
async def http(ops_gateway: ThreadedGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ops_gateway.base_url, timeout=20) as client:
        yield client


async def scrape(http: httpx.AsyncClient) -> dict[str, float]:
    """Every sample of /metrics (where this fixture's gateway serves it), by its full name."""
    answer = await http.get("/metrics")
    assert answer.status_code == 200
    samples = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


class Moves:
    """The samples' growth between two scrapes."""

    def __init__(self, before: dict[str, float], after: dict[str, float]) -> None:
        self.before, self.after = before, after

    def __call__(self, sample: str) -> float:
        return self.after.get(sample, 0.0) - self.before.get(sample, 0.0)


def person_in(gateway: ThreadedGateway) -> dict[str, str]:
    identity = new_identity()
    identity["id"] = gateway.add_person(**identity)
    return identity


async def lock_person(http: httpx.AsyncClient, person: dict[str, str], ip: dict[str, str]) -> None:
    """Wrong passwords (each with a captcha) until the account locks."""
    for _ in range(5):
        last = await login(http, person["login_name"], "Wrong-pass1", ip, **await solved_captcha(http))
        if last.status_code == 423:
            return
        assert last.status_code == 401, last.text
    raise AssertionError("not locked after 5 wrong passwords")


async def lock_unit(http: httpx.AsyncClient, tin: str, token: str) -> None:
    for attempt in range(5):
        extra = {}
        if attempt:  # the units service's own captcha
            made = await http.post("/units/v1/captcha")
            extra = {"captcha_id": made.json()["captcha_id"], "captcha_answer": CAPTCHA_ANSWER}
        answer = await http.post(
            f"/units/v1/units/{tin}/verify",
            json={"declaration_password": "Wrong-000", **extra},
            headers={**bearer(token), **fresh_ip()},
        )
        assert answer.status_code == (423 if attempt == 4 else 401), answer.text


async def test_logins_lockouts_unlocks_and_resets_are_counted_and_logged(
    ops_gateway: ThreadedGateway, http: httpx.AsyncClient, events: Events
) -> None:
    before = await scrape(http)
    ip = fresh_ip()
    person = person_in(ops_gateway)
    assert (await login(http, person["login_name"], person["password"], ip)).status_code == 200
    assert (await login(http, person["login_name"], "Wrong-pass1", ip)).status_code == 401
    no_captcha = await login(http, person["login_name"], person["password"], ip)
    assert no_captcha.json()["code"] == "captcha_required"
    wrong_captcha = await login(http, person["login_name"], person["password"], ip, captcha_id="x", captcha_answer="y")
    assert wrong_captcha.json()["code"] == "captcha_invalid"
    # A lockout, then the forgotten-password reset that unlocks it.
    await lock_person(http, person, ip)
    with sms_codes() as codes:
        body = {"purpose": "reset_password", "identity": identity_fields(person)}
        bare = await http.post("/v1/sms/challenges", json=body, headers=fresh_ip())
        assert bare.json()["code"] == "captcha_required"
        challenge, code = await sms_challenge(http, codes, body)
    forgot = await http.post(
        "/v1/password/forgot",
        json={**identity_fields(person), "sms_challenge_id": challenge, "sms_code": code},
        headers=fresh_ip(),
    )
    ticket = forgot.json()["reset_ticket"]
    reset = await http.post("/v1/password/reset", json={"reset_ticket": ticket, "new_password": "N3w-Secret!x"})
    assert reset.status_code == 204
    # Another lockout, reset at the hall.
    staff = person_in(ops_gateway)
    await asyncio.to_thread(grant_staff, ops_gateway, staff["login_name"])
    staff_token = await phone_login(http, staff, client_id="web")
    other = person_in(ops_gateway)
    await lock_person(http, other, fresh_ip())
    hall = await http.post(
        "/v1/admin/password-resets",
        json={**identity_fields(other), "mode": "temporary_password"},
        headers=bearer(staff_token),
    )
    assert hall.status_code == 200, hall.text

    # The units service: a declaration password locked, reset by the legal representative, locked
    # again, reset at the hall.
    boss = person_in(ops_gateway)
    tin = new_tin()
    created = await http.post(
        "/units/v1/admin/units",
        json={"tin": tin, "name": f"测试单位{tin[-6:]}有限公司", "declaration_password": DECLARATION_PASSWORD},
        headers=bearer(staff_token),
    )
    assert created.status_code == 201, created.text
    role = {"identifier": boss["login_name"], "role": "legal_rep"}
    assert (await http.put(f"/units/v1/admin/units/{tin}/roles", json=role, headers=bearer(staff_token))).is_success
    boss_token = await phone_login(http, boss, client_id="web")
    await lock_unit(http, tin, boss_token)
    new_password = {"new_password": "Fresh-4321"}
    by_officer = await http.put(
        f"/units/v1/units/{tin}/declaration-password", json=new_password, headers=bearer(boss_token)
    )
    assert by_officer.status_code == 204, by_officer.text
    await lock_unit(http, tin, boss_token)
    at_hall = await http.put(
        f"/units/v1/admin/units/{tin}/declaration-password", json=new_password, headers=bearer(staff_token)
    )
    assert at_hall.status_code == 204, at_hall.text
    moved = Moves(before, await scrape(http))

    def series(name: str, **labels: str) -> str:
        return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"

    logins = "qrgate_password_logins_total"
    assert moved(series(logins, outcome="success")) >= 3  # person, staff, boss
    assert moved(series(logins, outcome="invalid")) >= 8
    assert moved(series(logins, outcome="captcha_required")) >= 1
    assert moved(series(logins, outcome="captcha_invalid")) >= 1
    assert moved(series(logins, outcome="locked")) >= 2
    failures = "qrgate_captcha_failures_total"
    assert moved(series(failures, scope="login", reason="required")) >= 1
    assert moved(series(failures, scope="login", reason="invalid")) >= 1
    assert moved(series(failures, scope="sms-reset", reason="required")) >= 1
    assert moved(series("qrgate_lockouts_total", scope="login")) >= 2
    assert moved(series("qrgate_lockouts_total", scope="unit")) >= 2
    for scope, how in (("login", "forgotten_password"), ("login", "hall"), ("unit", "unit_officer"), ("unit", "hall")):
        assert moved(series("qrgate_password_resets_total", scope=scope, how=how)) >= 1, (scope, how)
        assert moved(series("qrgate_unlocks_total", scope=scope, how=how)) >= 1, (scope, how)

    assert events.of("password_login", outcome="success", sub=person["id"])
    assert events.of("password_login", outcome="invalid")
    assert events.of("captcha_failed", scope="login", reason="required")
    assert events.of("captcha_failed", scope="login", reason="invalid")
    assert events.of("captcha_failed", scope="sms-reset", reason="required")
    assert len(events.of("locked", scope="login")) >= 2
    assert len(events.of("locked", scope="unit")) >= 2
    assert events.of("password_reset", scope="login", how="forgotten_password", sub=person["id"])
    assert events.of("unlocked", scope="login", how="forgotten_password", sub=person["id"])
    assert events.of("password_reset", scope="login", how="hall", sub=other["id"])
    assert events.of("unlocked", scope="login", how="hall", sub=other["id"])
    for how in ("unit_officer", "hall"):
        assert events.of("password_reset", scope="unit", how=how, tin=tin)
        assert events.of("unlocked", scope="unit", how=how, tin=tin)
    # No secret in any of them.
    for record in events.records:
        text = repr(record)
        for secret in ("Wrong-pass1", "N3w-Secret!x", "Fresh-4321", person["password"], ticket, code):
            assert secret not in text


async def test_qr_outcomes_are_counted_and_logged(
    ops_gateway: ThreadedGateway, http: httpx.AsyncClient, events: Events
) -> None:
    before = await scrape(http)
    phone = await phone_login(http, person_in(ops_gateway))
    confirmed, cancelled, expiring = await mint(http), await mint(http), await mint(http)
    for code in (confirmed, cancelled):
        await http.post(f"/v1/qr/{code['qr_id']}/scan", headers=bearer(phone))
    assert (await http.post(f"/v1/qr/{confirmed['qr_id']}/confirm", headers=bearer(phone))).status_code == 204
    assert (await http.post(f"/v1/qr/{cancelled['qr_id']}/cancel", headers=bearer(phone))).status_code == 204
    # The last one is left to expire, seen by two polls: counted once.
    waiter = bearer(expiring["waiter_token"])
    seen = await http.get(f"/v1/qr/{expiring['qr_id']}/state?wait={QR_TTL + 3}&since=pending", headers=waiter)
    assert seen.json()["state"] == "expired"
    assert (await http.get(f"/v1/qr/{expiring['qr_id']}/state", headers=waiter)).json()["state"] == "expired"
    moved = Moves(before, await scrape(http))
    assert moved('qrgate_qr_events_total{event="confirm"}') >= 1
    assert moved('qrgate_qr_events_total{event="cancel"}') >= 1
    assert moved('qrgate_qr_events_total{event="expire"}') == 1
    for outcome in ("confirmed", "cancelled"):
        assert events.of("qr_outcome", outcome=outcome, client_id="withholding-desktop"), outcome
    assert len(events.of("qr_outcome", outcome="expired")) == 1
    for record in events.of("qr_outcome"):
        assert all(code["qr_id"] not in repr(record) for code in (confirmed, cancelled, expiring))
