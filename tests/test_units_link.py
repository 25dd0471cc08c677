"""The first unit link (`POST /units/v1/units/link`) through the separate units process: a right TIN and
declaration password make the person the unit's tax staff and answer a unit token at once; a wrong pair
counts against the unit's declaration-password lockout with verify's captcha and 423 rules; an unknown
TIN is answered exactly like a wrong password for a real unit (status, body, rules, time); bad input is
a 4xx that changes nothing; parallel wrong pairs are settled atomically."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.accounts import fresh_ip
from tests.support.gateway_server import CAPTCHA_ANSWER
from tests.support.units import (
    DECLARATION_PASSWORD,
    Person,
    UnitsStack,
    captcha,
    claims_of,
    new_person,
    new_tin,
    new_unit,
)

pytestmark = pytest.mark.anyio
LINK = "/v1/units/link"


@pytest.fixture
async def http(units_stack: UnitsStack) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=60)
    async with httpx.AsyncClient(base_url=units_stack.units_url, timeout=20, limits=limits) as client:
        yield client


@pytest.fixture
async def staff(units_stack: UnitsStack, http: httpx.AsyncClient) -> Person:
    return await new_person(units_stack, http, staff=True)


def pair(tin: str, password: str = "Wrong-000", **captcha_fields: str) -> dict[str, str]:  # noqa: S107
    return {"tin": tin, "declaration_password": password, **captcha_fields}


def granted_by(stack: UnitsStack, tin: str, person_id: str) -> str | None:
    path = stack.settings.database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT granted_by FROM unit_roles WHERE tin = ? AND person_id = ?", (tin, person_id)
        ).fetchone()
    return row[0] if row else None


def comparable(response: httpx.Response) -> tuple[int, str, dict[str, Any]]:
    """What a client sees of a refusal, but the seconds left on a lock (they tick)."""
    body = dict(response.json())
    body.pop("retry_after", None)
    return response.status_code, response.headers["content-type"], body


async def test_right_pair_links_and_answers_a_unit_token(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff, name="首次关联有限公司")
    assert (await clerk.get("/v1/units")).json()["units"] == []
    linked = await clerk.post(LINK, pair(tin.lower(), DECLARATION_PASSWORD))  # lower case is accepted
    assert linked.status_code == 200, linked.text
    assert linked.headers["cache-control"] == "no-store"
    body = linked.json()
    assert body["unit"] == {"tin": tin, "role": "tax_staff", "via": "declaration_password"}
    claims = claims_of(body["unit_token"])
    assert claims["sub"] == clerk.id
    assert claims["sid"] == claims_of(clerk.access_token)["sid"]
    assert claims["unit"] == body["unit"]
    # The role is the person's now, recorded as given by a first link.
    listed = (await clerk.get("/v1/units")).json()
    assert [(u["tin"], u["name"], u["role"]) for u in listed["units"]] == [(tin, "首次关联有限公司", "tax_staff")]
    assert granted_by(units_stack, tin, clerk.id) == "link"
    # From now on the unit is entered like any of the person's units.
    verified = await clerk.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD})
    assert verified.status_code == 200, verified.text
    # Linking again answers as verify: the same role, nothing added.
    again = await clerk.post(LINK, pair(tin, DECLARATION_PASSWORD))
    assert again.status_code == 200
    assert again.json()["unit"] == body["unit"]
    assert len((await clerk.get("/v1/units")).json()["units"]) == 1


async def test_a_member_keeps_their_role_and_is_answered_as_verify(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    boss = await new_person(units_stack, http)
    tin = await new_unit(staff, ("legal_rep", boss))
    answer = await boss.post(LINK, pair(tin, DECLARATION_PASSWORD))
    assert answer.status_code == 200, answer.text
    assert answer.json()["unit"]["role"] == "legal_rep"
    assert granted_by(units_stack, tin, boss.id) == staff.id
    wrong = await boss.post(LINK, pair(tin))
    assert wrong.status_code == 401
    assert wrong.json()["attempts_left"] == 4
    # A member of a unit without a declaration password learns it, as verify tells them.
    unset = await new_unit(staff, ("tax_staff", boss), password=None)
    refused = await boss.post(LINK, pair(unset))
    assert refused.status_code == 409
    assert refused.json()["code"] == "declaration_password_not_set"


async def test_wrong_pairs_follow_the_declaration_password_rules_and_unknown_tins_read_the_same(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    """One person works through a real unit and an unknown TIN side by side: every answer is the same."""
    clerk, member = await new_person(units_stack, http), await new_person(units_stack, http)
    real = await new_unit(staff, ("tax_staff", member))
    unknown = new_tin()
    unset = await new_unit(staff, password=None)  # exists, but has no password: must read as unknown too
    ip = fresh_ip()

    async def both(*, with_captcha: bool = False) -> list[httpx.Response]:
        answers = []
        for tin in (real, unknown, unset):
            fields = await captcha(http, ip) if with_captcha else {}
            answers.append(await clerk.post(LINK, pair(tin, **fields), **ip))
        return answers

    first = await both()
    assert first[0].status_code == 401
    assert first[0].json()["code"] == "invalid_credentials"
    assert first[0].json()["attempts_left"] == 4
    assert first[0].json()["captcha_required"] is True
    assert comparable(first[0]) == comparable(first[1]) == comparable(first[2])
    # The wrong pair counted against the real unit: its member now needs a captcha there too.
    assert (await member.get("/v1/units")).json()["units"][0]["captcha_required"] is True
    # Without a captcha, and with a wrong one: refused, not counted, alike.
    missing = [await clerk.post(LINK, pair(tin), **ip) for tin in (real, unknown, unset)]
    assert missing[0].status_code == 400
    assert missing[0].json()["code"] == "captcha_required"
    assert comparable(missing[0]) == comparable(missing[1]) == comparable(missing[2])
    bad = []
    for tin in (real, unknown, unset):
        bad.append(await clerk.post(LINK, pair(tin, **{**await captcha(http, ip), "captcha_answer": "NOPE"}), **ip))
    assert bad[0].json()["code"] == "captcha_invalid"
    assert comparable(bad[0]) == comparable(bad[1]) == comparable(bad[2])
    for left in (3, 2, 1):
        answers = await both(with_captcha=True)
        assert answers[0].json()["attempts_left"] == left
        assert comparable(answers[0]) == comparable(answers[1]) == comparable(answers[2])
    fifth = await both(with_captcha=True)
    assert fifth[0].status_code == 423
    assert fifth[0].json()["code"] == "account_locked"
    assert 7190 <= fifth[0].json()["retry_after"] <= 7200
    assert {a.headers["retry-after"] for a in fifth} <= {str(s) for s in range(7190, 7201)}
    assert comparable(fifth[0]) == comparable(fifth[1]) == comparable(fifth[2])
    # Locked: the right pair is refused too, for the linker and for the unit's member.
    right = await clerk.post(LINK, pair(real, DECLARATION_PASSWORD, **await captcha(http, ip)), **ip)
    assert right.status_code == 423
    assert (
        await member.post(f"/v1/units/{real}/verify", {"declaration_password": DECLARATION_PASSWORD})
    ).status_code == 423
    assert (await clerk.get("/v1/units")).json()["units"] == []  # nothing was linked


async def test_unknown_tin_takes_as_long_as_a_wrong_password(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    """Each probe a first attempt (no captcha yet) at a TIN of its own; medians compared."""
    clerk = await new_person(units_stack, http)
    reals = [await new_unit(staff) for _ in range(7)]
    unknowns = [new_tin() for _ in range(7)]
    times: dict[str, list[float]] = {"real": [], "unknown": []}
    for real, unknown in zip(reals, unknowns, strict=True):
        for kind, tin in (("real", real), ("unknown", unknown)):
            started = time.perf_counter()
            answer = await clerk.post(LINK, pair(tin), **fresh_ip())
            times[kind].append(time.perf_counter() - started)
            assert answer.status_code == 401
    real_ms, unknown_ms = (statistics.median(times[k]) * 1000 for k in ("real", "unknown"))
    print(f"median wrong-password link: real unit {real_ms:.1f} ms, unknown TIN {unknown_ms:.1f} ms")
    assert abs(real_ms - unknown_ms) < max(15.0, 0.5 * real_ms), (real_ms, unknown_ms)


async def test_bad_input_is_refused_and_counts_nothing(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff)
    cases: list[tuple[object, str]] = [
        ({}, "invalid_request"),
        ({"tin": tin}, "invalid_request"),
        ({"declaration_password": DECLARATION_PASSWORD}, "invalid_request"),
        (pair(tin, ""), "invalid_request"),
        (pair(tin, "x" * 65), "invalid_request"),
        (pair("x" * 33), "invalid_request"),
        ({"tin": 91110000, "declaration_password": DECLARATION_PASSWORD}, "invalid_request"),
        ({**pair(tin), "extra": 1}, "invalid_request"),
        (pair("91110000600037341X"), "invalid_tin"),
        (pair("9111000060003734\x001L"), "invalid_request"),  # control characters never get in
        (pair("𠮷" * 18), "invalid_tin"),
        ([tin], "invalid_request"),
    ]
    for body, code in cases:
        answer = await clerk.post(LINK, body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == code, (body, answer.json())
        assert answer.json()["detail"]
    raw = await http.post(LINK, content=b"{not json", headers={**clerk.headers, "Content-Type": "application/json"})
    assert raw.status_code == 400
    assert raw.json()["code"] == "malformed_json"
    form = await http.post(LINK, data={"tin": tin}, headers=clerk.headers)
    assert form.status_code == 415
    anonymous = await http.post(LINK, json=pair(tin, DECLARATION_PASSWORD))
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "invalid_token"
    # None of it counted: the right pair, without a captcha, links at once.
    assert (await clerk.post(LINK, pair(tin, DECLARATION_PASSWORD))).status_code == 200


async def test_fifty_parallel_wrong_pairs_count_exactly_five(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    people = [await new_person(units_stack, http) for _ in range(5)]
    for tin in (await new_unit(staff), new_tin()):
        ip = fresh_ip()
        captchas = [await captcha(http, ip) for _ in range(50)]
        answers = await asyncio.gather(
            *(people[i % 5].post(LINK, pair(tin, f"Wrong-{i:03d}", **captchas[i]), **ip) for i in range(50))
        )
        statuses = [answer.status_code for answer in answers]
        assert statuses.count(401) == 4, statuses
        assert statuses.count(423) == 46, statuses
        assert sorted(a.json()["attempts_left"] for a in answers if a.status_code == 401) == [1, 2, 3, 4]
        right = await people[0].post(LINK, pair(tin, DECLARATION_PASSWORD), **ip)
        assert right.status_code == 423


async def test_cli_links_with_a_prompted_password_and_a_captcha(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person, tmp_path: Path
) -> None:
    """`qrgate units link TIN`: the token from the file `qrgate login --json` writes, the password from
    stdin (never argv); a wrong one reports the attempts left; the next run solves the captcha."""
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff, name="命令行有限公司")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"access_token": clerk.access_token, "token_type": "Bearer"}))
    base = ["units", "link", tin, "--url", units_stack.gateway_url, "--token-file", str(tokens)]

    wrong = await asyncio.to_thread(units_stack.qrgate, *base, "--password-stdin", stdin="Wrong-000\n")
    assert wrong.returncode == 1, wrong.stderr
    assert "还可尝试4次" in wrong.stderr
    assert "4 attempts left" in wrong.stderr
    assert "Wrong-000" not in wrong.stderr + wrong.stdout

    right = await asyncio.to_thread(
        units_stack.qrgate, *base, "--password-stdin", "--json", stdin=f"{DECLARATION_PASSWORD}\n{CAPTCHA_ANSWER}\n"
    )
    assert right.returncode == 0, right.stderr
    assert "A captcha is needed" in right.stderr
    answer = json.loads(right.stdout)
    assert answer["unit"] == {"tin": tin, "role": "tax_staff", "via": "declaration_password"}
    assert claims_of(answer["unit_token"])["sub"] == clerk.id
    assert "办税人员 / tax staff" in right.stderr
    assert granted_by(units_stack, tin, clerk.id) == "link"

    # Without a login the command says what to do, and asks nothing.
    missing = await asyncio.to_thread(units_stack.qrgate, "units", "link", tin, "--url", units_stack.gateway_url)
    assert missing.returncode == 1
    assert "qrgate login --json" in missing.stderr
    unknown = await asyncio.to_thread(
        units_stack.qrgate,
        "units",
        "link",
        new_tin(),
        "--url",
        units_stack.gateway_url,
        "--token-file",
        str(tokens),
        "--password-stdin",
        stdin="Wrong-000\n",
    )
    assert unknown.returncode == 1
    assert "还可尝试4次" in unknown.stderr  # an unknown unit reads like a wrong password


async def test_the_same_person_linking_twice_at_once_gets_one_role(
    units_stack: UnitsStack, http: httpx.AsyncClient, staff: Person
) -> None:
    clerk = await new_person(units_stack, http)
    tin = await new_unit(staff)
    # (Attempts in flight make the guard ask the others for a captcha: each brings one.)
    captchas = [await captcha(http) for _ in range(4)]
    answers = await asyncio.gather(*(clerk.post(LINK, pair(tin, DECLARATION_PASSWORD, **c)) for c in captchas))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert {a.json()["unit"]["role"] for a in answers} == {"tax_staff"}
    assert [u["tin"] for u in (await clerk.get("/v1/units")).json()["units"]] == [tin]
    assert granted_by(units_stack, tin, clerk.id) == "link"
