"""Lockout as docs/domain.md says, through the real server: captcha after one wrong password, the 5th
failure locks for 120 minutes, one counter per person, unknown identifiers answered exactly like
known ones (status, body, captcha behaviour, timing), atomic counting, the per-IP throttle, audit."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import audit_kinds, fresh_ip, login, solved_captcha
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

pytestmark = pytest.mark.anyio
Person = Callable[..., dict[str, str]]
WRONG = "Wrong-pass1"


async def test_after_one_wrong_password_a_captcha_is_required(http: httpx.AsyncClient, make_person: Person) -> None:
    person = make_person()
    first = await login(http, person["phone"], WRONG)
    assert (first.status_code, first.json()["attempts_left"], first.json()["captcha_required"]) == (401, 4, True)
    missing = await login(http, person["phone"], person["password"])
    assert (missing.status_code, missing.json()["code"]) == (400, "captcha_required")
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = await login(http, person["phone"], person["password"], captcha_id="nope", captcha_answer="ABCD")
    assert (wrong.status_code, wrong.json()["code"]) == (400, "captcha_invalid")
    # Neither counted: the next wrong password still leaves 3.
    second = await login(http, person["login_name"], WRONG, **await solved_captcha(http))
    assert second.json()["attempts_left"] == 3
    ok = await login(http, person["id_number"], person["password"], **await solved_captcha(http))
    assert ok.status_code == 200
    # A success ends the captcha requirement and the count.
    assert (await login(http, person["phone"], WRONG)).json()["attempts_left"] == 4


async def test_a_captcha_without_an_answer_is_consumed(http: httpx.AsyncClient, make_person: Person) -> None:
    person = make_person()
    await login(http, person["phone"], WRONG)
    captcha = await solved_captcha(http)
    half = await login(http, person["phone"], person["password"], captcha_id=captcha["captcha_id"])
    assert half.json()["code"] == "captcha_required"
    full = await login(http, person["phone"], person["password"], **captcha)
    assert full.json()["code"] == "captcha_invalid"


async def test_fifth_failure_locks_for_120_minutes_and_is_audited(
    gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Person
) -> None:
    person = make_person()
    answers = [await login(http, person["phone"], WRONG)]
    for _ in range(4):
        answers.append(await login(http, person["phone"], WRONG, **await solved_captcha(http)))
    assert [a.status_code for a in answers] == [401, 401, 401, 401, 423]
    locked = answers[-1]
    assert locked.json()["code"] == "account_locked"
    assert 7190 <= locked.json()["retry_after"] <= 7200
    assert locked.headers["retry-after"] == str(locked.json()["retry_after"])
    # Locked: refused before any captcha or password is looked at, whatever the identifier.
    for identifier in (person["login_name"], person["id_number"]):
        again = await login(http, identifier, person["password"], **await solved_captcha(http))
        assert again.status_code == 423
    assert audit_kinds(gateway.settings.database_url, person["id"]) == ["account_locked"]


async def test_fifty_parallel_wrong_guesses_count_exactly_five(http: httpx.AsyncClient, make_person: Person) -> None:
    person = make_person()
    ip = fresh_ip()
    captchas = [await solved_captcha(http, ip) for _ in range(50)]
    answers = await asyncio.gather(
        *(login(http, person["phone"], f"Wrong-pass{i}", ip, **captchas[i]) for i in range(50))
    )
    statuses = [a.status_code for a in answers]
    assert (statuses.count(401), statuses.count(423)) == (4, 46)
    assert sorted(a.json()["attempts_left"] for a in answers if a.status_code == 401) == [1, 2, 3, 4]
    after = await login(http, person["phone"], person["password"], ip, **await solved_captcha(http, ip))
    assert after.status_code == 423


async def test_fifty_parallel_guesses_without_captchas_still_count_at_most_five(
    http: httpx.AsyncClient, make_person: Person
) -> None:
    person = make_person()
    ip = fresh_ip()
    answers = await asyncio.gather(*(login(http, person["phone"], f"Wrong-pass{i}", ip) for i in range(50)))
    counted = [a for a in answers if a.status_code in (401, 423)]
    refused = [a for a in answers if a.status_code == 400]
    assert len(counted) + len(refused) == 50
    assert all(a.json()["code"] == "captcha_required" for a in refused)
    assert len([a for a in counted if a.status_code == 401]) <= 4


def _shape(response: httpx.Response) -> tuple[int, dict[str, object], str]:
    return response.status_code, response.json(), response.headers["content-type"]


async def test_unknown_identifiers_are_answered_exactly_like_known_ones(
    http: httpx.AsyncClient, make_person: Person
) -> None:
    person = make_person()
    unknown = "nobody_" + person["login_name"]
    for identifier in (person["login_name"], unknown):
        assert _shape(await login(http, identifier, WRONG))[0] == 401
    known_flow: list[tuple[int, dict[str, object], str]] = []
    unknown_flow: list[tuple[int, dict[str, object], str]] = []
    for identifier, flow in ((person["login_name"], known_flow), (unknown, unknown_flow)):
        flow.append(_shape(await login(http, identifier, WRONG)))  # no captcha
        flow.append(_shape(await login(http, identifier, WRONG, captcha_id="x", captcha_answer="y")))
        for _ in range(4):
            flow.append(_shape(await login(http, identifier, WRONG, **await solved_captcha(http))))
    assert [s for s, _, _ in known_flow] == [400, 400, 401, 401, 401, 423]
    for (ks, kb, kt), (us, ub, ut) in zip(known_flow, unknown_flow, strict=True):
        assert (ks, kt) == (us, ut)
        if ks == 423:
            assert set(kb) == set(ub)
            assert abs(int(str(kb.pop("retry_after"))) - int(str(ub.pop("retry_after")))) <= 2
            kb.pop("detail"), ub.pop("detail")
        assert kb == ub


async def test_unknown_and_known_identifiers_take_the_same_time(http: httpx.AsyncClient, make_person: Person) -> None:
    """Same timing class: both verify an argon2id hash (a decoy for the unknown). Means of a few tries
    each, interleaved, within 3x of each other."""
    known: list[float] = []
    unknown: list[float] = []
    for i in range(6):
        person = make_person()  # a fresh person (and unknown name) each time: no captcha in the way
        for identifier, samples in ((person["login_name"], known), (f"ghost_{i}_{person['login_name']}", unknown)):
            started = time.perf_counter()
            response = await login(http, identifier, WRONG)
            samples.append(time.perf_counter() - started)
            assert response.status_code == 401
    ratio = statistics.mean(known) / statistics.mean(unknown)
    assert 1 / 3 <= ratio <= 3, (known, unknown)


async def test_per_ip_throttle(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(tmp_path, port, login_ip_max_attempts=3, login_ip_window=60)
    server = ThreadedGateway(settings, port).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            ip = fresh_ip()
            first = [(await login(http, f"someone_{i}", WRONG, ip)).status_code for i in range(3)]
            throttled = await login(http, "someone_else", WRONG, ip)
            other_ip = await login(http, "someone_else", WRONG, fresh_ip())
    finally:
        server.stop()
    assert first == [401, 401, 401]
    assert (throttled.status_code, throttled.json()["code"]) == (429, "too_many_requests")
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert throttled.json()["retry_after"] == int(throttled.headers["retry-after"])
    assert other_ip.status_code == 401
