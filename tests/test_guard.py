"""The attempt guard: the pure decisions, the same decisions in Redis's Lua (compared step by step
with the memory store on random histories), exactness under concurrency on both stores and across
two stores sharing one Redis, and through the real server: password login and the declaration
password, parallel wrong guesses without captchas (exactly one checked) and parallel right ones
(never locked)."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway.guard.guard import Attempt, SecretGuard
from gateway.state import attempts
from gateway.state.attempts import (
    Admission,
    AttemptLimits,
    AttemptRecord,
    CaptchaCheck,
    Outcome,
    Verdict,
    admit,
    settle,
)
from gateway.state.base import StateStore
from gateway.state.keys import Guarded
from gateway.state.memory import MemoryStore
from gateway.state.redis import RedisStore
from tests.support.accounts import fresh_ip, identity_fields, login, sms_challenge, sms_codes, solved_captcha
from tests.support.redis_procs import RedisClusterGroup, RedisServer
from tests.support.units import DECLARATION_PASSWORD, Person, UnitsStack, captcha, new_person, new_unit

LIMITS = AttemptLimits(max_failures=5, lock_seconds=7200, reservation_seconds=10, captcha_seconds=86400)
NO_CAPTCHA = AttemptLimits(max_failures=3, lock_seconds=600, reservation_seconds=10)
NOW = 1_800_000_000.0
_ids = itertools.count()


def attempt_id() -> str:
    return f"a{next(_ids)}"


# The pure rules ---------------------------------------------------------------------------------------


def test_a_clean_record_admits_one_attempt_without_a_captcha_at_a_time() -> None:
    record = AttemptRecord()
    assert admit(record, "a", CaptchaCheck.NONE, LIMITS, NOW).admission is Admission.ADMITTED
    assert admit(record, "b", CaptchaCheck.NONE, LIMITS, NOW).admission is Admission.CAPTCHA_REQUIRED
    assert admit(record, "c", CaptchaCheck.WRONG, LIMITS, NOW).admission is Admission.CAPTCHA_INVALID
    assert admit(record, "d", CaptchaCheck.SOLVED, LIMITS, NOW).admission is Admission.ADMITTED
    # The first one succeeds: nothing is due any more once the second is settled too.
    assert settle(record, "a", Outcome.SUCCEEDED, LIMITS, NOW).verdict is Verdict.SUCCEEDED
    assert settle(record, "d", Outcome.SUCCEEDED, LIMITS, NOW).verdict is Verdict.SUCCEEDED
    assert admit(record, "e", CaptchaCheck.NONE, LIMITS, NOW).admission is Admission.ADMITTED


def test_a_captcha_still_being_checked_is_admitted_and_told_whether_it_was_due() -> None:
    record = AttemptRecord()
    free = admit(record, "a", CaptchaCheck.PRESENTED, LIMITS, NOW)
    assert (free.admission, free.captcha_due) == (Admission.ADMITTED, False)  # a clean record: not due
    due = admit(record, "b", CaptchaCheck.PRESENTED, LIMITS, NOW)
    assert (due.admission, due.captcha_due) == (Admission.ADMITTED, True)  # "a" is in flight


def test_places_are_bounded_by_what_is_left_before_the_lock() -> None:
    record = AttemptRecord()
    outcomes = [admit(record, f"a{i}", CaptchaCheck.SOLVED, LIMITS, NOW).admission for i in range(8)]
    assert outcomes == [Admission.ADMITTED] * 5 + [Admission.BUSY] * 3
    verdicts = [settle(record, f"a{i}", Outcome.FAILED, LIMITS, NOW) for i in range(5)]
    assert [v.verdict for v in verdicts] == [Verdict.FAILED] * 4 + [Verdict.LOCKED]
    assert [v.failures for v in verdicts] == [1, 2, 3, 4, 5]
    locked = admit(record, "late", CaptchaCheck.SOLVED, LIMITS, NOW + 1)
    assert (locked.admission, locked.locked_until) == (Admission.LOCKED, NOW + 7200)
    assert admit(record, "after", CaptchaCheck.SOLVED, LIMITS, NOW + 7200).admission is Admission.ADMITTED


def test_right_secrets_in_flight_never_lock() -> None:
    record = AttemptRecord()
    for round_ in range(6):
        ids = [f"r{round_}-{i}" for i in range(5)]
        assert all(admit(record, i, CaptchaCheck.SOLVED, LIMITS, NOW).admission is Admission.ADMITTED for i in ids)
        assert all(settle(record, i, Outcome.SUCCEEDED, LIMITS, NOW).verdict is Verdict.SUCCEEDED for i in ids)
    assert attempts.status(record, NOW) == attempts.AttemptStatus(None, False)


def test_a_place_lapses_and_an_abandoned_attempt_gives_it_back() -> None:
    record = AttemptRecord()
    for i in range(5):
        admit(record, f"k{i}", CaptchaCheck.SOLVED, LIMITS, NOW)  # a process killed after admitting these
    assert admit(record, "x", CaptchaCheck.SOLVED, LIMITS, NOW + 9).admission is Admission.BUSY
    assert admit(record, "y", CaptchaCheck.NONE, LIMITS, NOW + 10).admission is Admission.ADMITTED
    assert settle(record, "y", Outcome.ABANDONED, LIMITS, NOW + 10).verdict is Verdict.RELEASED
    assert attempts.status(record, NOW + 10) == attempts.AttemptStatus(None, False)  # nothing was counted


def test_failures_lapse_after_the_lock_period_and_codes_need_no_captcha() -> None:
    record = AttemptRecord()
    admit(record, "a", CaptchaCheck.NONE, NO_CAPTCHA, NOW)
    assert settle(record, "a", Outcome.FAILED, NO_CAPTCHA, NOW).failures == 1
    assert admit(record, "b", CaptchaCheck.NONE, NO_CAPTCHA, NOW).admission is Admission.ADMITTED  # no captcha rule
    assert settle(record, "b", Outcome.FAILED, NO_CAPTCHA, NOW).failures == 2
    admit(record, "c", CaptchaCheck.NONE, NO_CAPTCHA, NOW + 600)
    assert settle(record, "c", Outcome.FAILED, NO_CAPTCHA, NOW + 600).failures == 1  # counted afresh


# Memory and Redis make the same decisions -------------------------------------------------------------

Step = tuple[str, int, CaptchaCheck, float]  # (admit | settle-<outcome>, subject, captcha, seconds later)
steps = st.lists(
    st.tuples(
        st.sampled_from(["admit"] * 4 + ["settle-failed"] * 2 + ["settle-succeeded", "settle-abandoned"]),
        st.integers(0, 1),
        st.sampled_from([CaptchaCheck.SOLVED, CaptchaCheck.PRESENTED, CaptchaCheck.NONE, CaptchaCheck.WRONG]),
        st.sampled_from([0.0, 0.0, 0.0, 0.5, 4.0, 11.0]),
    ),
    max_size=60,
)
SHORT = AttemptLimits(max_failures=3, lock_seconds=8, reservation_seconds=3, captcha_seconds=5)


async def replay(store: StateStore, prefix: str, history: list[Step]) -> list[object]:
    """Apply `history` to `store`; settle steps settle the oldest attempt still open on the subject."""
    now = NOW
    seen: list[object] = []
    open_: dict[int, list[str]] = {0: [], 1: []}
    for n, (kind, subject, check, later) in enumerate(history):
        now += later
        key = f"{prefix}:{subject}"
        if kind == "admit":
            admitted = await store.admit_attempt(key, f"t{n}", check, SHORT, now)
            if admitted.admission is Admission.ADMITTED:
                open_[subject].append(f"t{n}")
            seen.append(admitted)
        elif open_[subject]:
            seen.append(await store.settle_attempt(key, open_[subject].pop(0), Outcome(kind[7:]), SHORT, now))
        seen.append(await store.attempt_status(key, now))
    return seen


@pytest.fixture(scope="module")
def shared_redis(module_redis: RedisServer) -> RedisServer:
    return module_redis


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=steps)
def test_the_lua_scripts_decide_exactly_like_the_pure_rules(shared_redis: RedisServer, history: list[Step]) -> None:
    async def body() -> tuple[list[object], list[object]]:
        memory = MemoryStore()
        redis = RedisStore.from_url(shared_redis.url)
        await redis.start()
        try:
            prefix = uuid.uuid4().hex
            return await replay(memory, prefix, history), await replay(redis, prefix, history)
        finally:
            await redis.close()

    in_memory, in_redis = asyncio.run(body())
    assert in_redis == in_memory


# Exact under concurrency, on both stores and across two stores on one Redis ----------------------------


@asynccontextmanager
async def stores(kind: str, redis: RedisServer | None) -> AsyncIterator[list[StateStore]]:
    """Two stores that share their data: one memory store twice, or two clients of one Redis."""
    if kind == "memory":
        memory = MemoryStore()
        yield [memory, memory]
        return
    assert redis is not None
    pair: list[StateStore] = [RedisStore.from_url(redis.url), RedisStore.from_url(redis.url)]
    for store in pair:
        await store.start()
    try:
        yield pair
    finally:
        for store in pair:
            await store.close()


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_fifty_concurrent_admissions_are_exact(kind: str, request: pytest.FixtureRequest) -> None:
    redis: RedisServer | None = request.getfixturevalue("module_redis") if kind == "redis" else None

    async def body() -> tuple[list[Admission], list[Admission]]:
        async with stores(kind, redis) as pair:
            clean, solved = uuid.uuid4().hex, uuid.uuid4().hex
            without = await asyncio.gather(
                *(pair[i % 2].admit_attempt(clean, attempt_id(), CaptchaCheck.NONE, LIMITS, NOW) for i in range(50))
            )
            with_captchas = await asyncio.gather(
                *(pair[i % 2].admit_attempt(solved, attempt_id(), CaptchaCheck.SOLVED, LIMITS, NOW) for i in range(50))
            )
            return [a.admission for a in without], [a.admission for a in with_captchas]

    without, with_captchas = asyncio.run(body())
    assert (without.count(Admission.ADMITTED), without.count(Admission.CAPTCHA_REQUIRED)) == (1, 49)
    assert (with_captchas.count(Admission.ADMITTED), with_captchas.count(Admission.BUSY)) == (5, 45)


def test_the_guard_scripts_run_on_a_cluster(redis_cluster: RedisClusterGroup) -> None:
    """Both keys of a subject share a slot, so the scripts are legal on Redis Cluster."""
    cluster = redis_cluster

    async def body() -> list[object]:
        store = RedisStore.from_url(cluster.url, prefix="g" + uuid.uuid4().hex[:8])
        await store.start()
        try:
            key = uuid.uuid4().hex
            return [
                await store.admit_attempt(key, "a", CaptchaCheck.NONE, LIMITS, NOW),
                await store.settle_attempt(key, "a", Outcome.FAILED, LIMITS, NOW),
                await store.attempt_status(key, NOW),
                await store.clear_attempts(key, NOW),
            ]
        finally:
            await store.close()

    assert asyncio.run(body()) == [
        attempts.Admitted(Admission.ADMITTED),
        attempts.Settled(Verdict.FAILED, 1),
        attempts.AttemptStatus(None, True),
        False,
    ]


# Through the server: password login -----------------------------------------------------------------

Factory = Callable[..., dict[str, str]]


def statuses(answers: list[httpx.Response]) -> dict[tuple[int, str], int]:
    counted: dict[tuple[int, str], int] = {}
    for answer in answers:
        key = (answer.status_code, answer.json().get("code", "") if answer.status_code != 200 else "")
        counted[key] = counted.get(key, 0) + 1
    return counted


@pytest.mark.anyio
async def test_thirty_parallel_wrong_passwords_without_captchas_check_exactly_one(
    http: httpx.AsyncClient, make_person: Factory
) -> None:
    person = make_person()
    ip = fresh_ip()
    answers = await asyncio.gather(*(login(http, person["phone"], f"Wrong-pass{i}", ip) for i in range(30)))
    assert statuses(list(answers)) == {(401, "invalid_credentials"): 1, (400, "captcha_required"): 29}
    checked = next(a for a in answers if a.status_code == 401)
    assert checked.json()["attempts_left"] == 4


@pytest.mark.anyio
async def test_thirty_parallel_right_passwords_never_lock(http: httpx.AsyncClient, make_person: Factory) -> None:
    person = make_person()
    ip = fresh_ip()
    captchas = [await solved_captcha(http, ip) for _ in range(30)]
    answers = await asyncio.gather(
        *(login(http, person["phone"], person["password"], ip, **captchas[i]) for i in range(30))
    )
    assert statuses(list(answers)) == {(200, ""): 30}
    bare = await asyncio.gather(*(login(http, person["login_name"], person["password"], ip) for _ in range(30)))
    counted = statuses(list(bare))
    assert set(counted) <= {(200, ""), (400, "captcha_required")}, counted
    assert counted[(200, "")] >= 1


# Through the units service: the declaration password -------------------------------------------------


@pytest.fixture
async def units_http(units_stack: UnitsStack) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=60)
    async with httpx.AsyncClient(base_url=units_stack.units_url, timeout=30, limits=limits) as client:
        yield client


@pytest.mark.anyio
async def test_the_declaration_password_is_guarded_the_same_way(
    units_stack: UnitsStack, units_http: httpx.AsyncClient
) -> None:
    staff: Person = await new_person(units_stack, units_http, staff=True)
    clerk = await new_person(units_stack, units_http)
    tin = await new_unit(staff, ("tax_staff", clerk))
    ip = fresh_ip()
    wrong = await asyncio.gather(
        *(clerk.post(f"/v1/units/{tin}/verify", {"declaration_password": f"Wrong-{i:03d}"}, **ip) for i in range(30))
    )
    assert statuses(list(wrong)) == {(401, "invalid_credentials"): 1, (400, "captcha_required"): 29}
    captchas = [await captcha(units_http, ip) for _ in range(30)]
    right = await asyncio.gather(
        *(
            clerk.post(f"/v1/units/{tin}/verify", {"declaration_password": DECLARATION_PASSWORD, **captchas[i]}, **ip)
            for i in range(30)
        )
    )
    assert statuses(list(right)) == {(200, ""): 30}


# The guard's own sequence, on the memory store ----------------------------------------------------------


def test_an_attempt_waits_for_the_verdicts_in_flight_then_gives_up_with_429() -> None:
    limits = AttemptLimits(max_failures=2, lock_seconds=60, reservation_seconds=0.3)
    guard = SecretGuard(MemoryStore(), scope=Guarded.SMS_CODE, limits=limits)
    release = asyncio.Event()

    async def slow_right() -> bool:
        await release.wait()
        return True

    async def body() -> tuple[list[object], str, bool]:
        held = [asyncio.create_task(guard.check("s", Attempt("1.2.3.4"), slow_right)) for _ in range(2)]
        await asyncio.sleep(0.01)
        try:
            await guard.check("s", Attempt("1.2.3.4"), slow_right)
            code = "admitted"
        except errors.TooManyRequests as refused:
            code = refused.code
        # The places lapse with their reservation; a verdict arriving later still counts.
        release.set()
        done = await asyncio.gather(*held, return_exceptions=True)
        status = await guard.status("s")
        return list(done), code, status.locked_until is None

    done, code, unlocked = asyncio.run(body())
    assert code == "attempts_in_progress"
    assert done == [None, None]
    assert unlocked


def test_a_lock_set_on_a_clock_ahead_still_reads_as_the_lock_period() -> None:
    """A 120-minute lock set by a process whose clock runs 3 s ahead reads "120 minutes", not 121."""
    limits = AttemptLimits(max_failures=1, lock_seconds=7200, reservation_seconds=10)
    store = MemoryStore()
    guard = SecretGuard(store, scope=Guarded.LOGIN, limits=limits)

    async def wrong() -> bool:
        return False

    async def body() -> errors.Locked:
        ahead = time.time() + 3
        key = f"{Guarded.LOGIN.value}:s"
        await store.admit_attempt(key, "a1", CaptchaCheck.NONE, limits, ahead)
        settled = await store.settle_attempt(key, "a1", Outcome.FAILED, limits, ahead)
        assert settled.verdict is Verdict.LOCKED
        with pytest.raises(errors.Locked) as refused:
            await guard.check("s", Attempt("1.2.3.4"), wrong)
        return refused.value

    locked = asyncio.run(body())
    assert "Try again in 120 minutes" in locked.detail
    assert locked.headers is not None
    assert 7190 <= int(locked.headers["Retry-After"]) <= 7200


def test_a_check_that_cannot_run_gives_its_place_back() -> None:
    limits = AttemptLimits(max_failures=1, lock_seconds=60, reservation_seconds=30)
    store = MemoryStore()
    guard = SecretGuard(store, scope=Guarded.SMS_CODE, limits=limits)

    async def database_down() -> bool:
        raise errors.ServiceUnavailable("down")

    async def right() -> bool:
        return True

    async def body() -> None:
        with pytest.raises(errors.ServiceUnavailable):
            await guard.check("s", Attempt("1.2.3.4"), database_down)
        await guard.check("s", Attempt("1.2.3.4"), right)  # its one place was given back at once

    asyncio.run(body())


@pytest.mark.anyio
async def test_ten_parallel_wrong_sms_codes_void_the_code_exactly(
    http: httpx.AsyncClient, make_person: Factory
) -> None:
    """Five tries per code, each answered as a wrong code (4, 3, 2, 1, 0 left); the rest `sms_attempts_exceeded`."""
    person = make_person()
    with sms_codes() as codes:
        challenge, code = await sms_challenge(
            http, codes, {"purpose": "reset_password", "identity": identity_fields(person)}
        )
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    forgot = {**identity_fields(person), "sms_challenge_id": challenge, "sms_code": wrong}
    answers = await asyncio.gather(
        *(http.post("/v1/password/forgot", json=forgot, headers=fresh_ip()) for _ in range(10))
    )
    assert all(a.status_code == 400 for a in answers), [a.text for a in answers]
    checked = sorted(a.json()["attempts_left"] for a in answers if "attempts_left" in a.json())
    others = sorted(a.json()["code"] for a in answers if "attempts_left" not in a.json())
    assert checked == [0, 1, 2, 3, 4]  # exactly five tries were checked
    # The rest were refused unchecked: every try used (`sms_attempts_exceeded`), or, once the last wrong
    # try voided the code, no such challenge any more (`sms_code_invalid` without attempts, as before).
    assert len(others) == 5
    assert set(others) <= {"sms_attempts_exceeded", "sms_code_invalid"}
    again = await http.post("/v1/password/forgot", json={**forgot, "sms_code": code}, headers=fresh_ip())
    assert again.json()["code"] == "sms_code_invalid"  # the right code no longer works either
