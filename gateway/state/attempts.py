"""Guarded attempts at a secret: the store-level record and its two atomic steps, with no I/O.

Theory of operation. Every secret check (a password, a declaration password, a code) is an *attempt*
on a *subject* (a person, a unit, a challenge). An attempt is first **admitted**, then **settled**
with its verdict, each step one atomic operation in the store (a function under the event loop in
memory; `ADMIT_LUA` / `SETTLE_LUA` in Redis, which make exactly the decisions written here):

    admit:  locked?                          -> LOCKED (nothing else is looked at)
            captcha due and none / a wrong one -> CAPTCHA_REQUIRED / CAPTCHA_INVALID (not counted)
            (a captcha still being checked, PRESENTED, is admitted as if solved, and the answer says
            it was due: if it then proves wrong, the caller gives the place back at once)
            failures + attempts in flight >= max -> BUSY (the verdicts in flight decide; ask again)
            else the attempt holds a place for `reservation_seconds`  -> ADMITTED
    settle: succeeded -> failures and the captcha rule cleared
            failed    -> one failure counted; the captcha rule starts; the max-th failure locks

Only verdicts count, so parallel right secrets never lock anything, and a process killed between the
two steps leaves nothing behind but a place that lapses within seconds. Places are bounded by what
is left before the lock, so of N parallel wrong guesses exactly `max_failures` are checked. A
captcha is due once a secret was wrong, *and while any attempt is in flight*: the one attempt
without a captcha that a clean record allows is itself exclusive, so of N parallel guesses without
captchas exactly one is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class CaptchaCheck(StrEnum):
    NONE = "none"  # no captcha came with the attempt (or one without an answer)
    PRESENTED = "presented"  # one came, checked in the same round trip: admitted as if solved (below)
    SOLVED = "solved"
    WRONG = "wrong"  # wrong, used or expired


class Admission(StrEnum):
    ADMITTED = "admitted"
    LOCKED = "locked"
    CAPTCHA_REQUIRED = "captcha_required"
    CAPTCHA_INVALID = "captcha_invalid"
    BUSY = "busy"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"  # no verdict (the check itself could not run): the place is given back


class Verdict(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOCKED = "locked"
    RELEASED = "released"  # with ABANDONED


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    max_failures: int
    lock_seconds: int
    reservation_seconds: float  # how long an admitted attempt may take before its place lapses
    captcha_seconds: int = 0  # after a wrong secret a captcha is due this long (0: no captcha rule)

    @property
    def reservation_ms(self) -> int:
        return max(1, int(self.reservation_seconds * 1000))


@dataclass(frozen=True, slots=True)
class Admitted:
    admission: Admission
    locked_until: float = 0.0  # with LOCKED
    captcha_due: bool = False  # with ADMITTED: a captcha was due, so a PRESENTED one must prove right


@dataclass(frozen=True, slots=True)
class Settled:
    verdict: Verdict
    failures: int = 0  # with FAILED: failures counted so far
    locked_until: float = 0.0  # with LOCKED


@dataclass(frozen=True, slots=True)
class AttemptStatus:
    locked_until: float | None
    captcha_required: bool


@dataclass(slots=True)
class AttemptRecord:
    """One subject's record. Deadlines are wall-clock seconds; a deadline in the past is as absent."""

    failures: int = 0
    failures_until: float = 0.0  # the count lapses `lock_seconds` after its first failure
    locked_until: float = 0.0
    captcha_until: float = 0.0
    in_flight: dict[str, float] = field(default_factory=dict)  # attempt id -> place held until

    def live_until(self) -> float:
        """When nothing of this record matters any more (the store may forget it then)."""
        return max(self.failures_until, self.locked_until, self.captcha_until, *self.in_flight.values(), 0.0)


def admit(record: AttemptRecord, attempt: str, captcha: CaptchaCheck, limits: AttemptLimits, now: float) -> Admitted:
    if record.locked_until > now:
        return Admitted(Admission.LOCKED, record.locked_until)
    if record.failures_until <= now:
        record.failures = 0
    for held, until in list(record.in_flight.items()):
        if until <= now:
            del record.in_flight[held]
    due = bool(limits.captcha_seconds) and (record.captcha_until > now or bool(record.in_flight))
    if due and captcha is CaptchaCheck.NONE:
        return Admitted(Admission.CAPTCHA_REQUIRED)
    if due and captcha is CaptchaCheck.WRONG:
        return Admitted(Admission.CAPTCHA_INVALID)
    if record.failures + len(record.in_flight) >= limits.max_failures:
        return Admitted(Admission.BUSY)
    record.in_flight[attempt] = now + limits.reservation_seconds
    return Admitted(Admission.ADMITTED, captcha_due=due)


def settle(record: AttemptRecord, attempt: str, outcome: Outcome, limits: AttemptLimits, now: float) -> Settled:
    # A place that lapsed (a very slow check) is gone already; its verdict counts all the same.
    record.in_flight.pop(attempt, None)
    if outcome is Outcome.ABANDONED:
        return Settled(Verdict.RELEASED)
    if outcome is Outcome.SUCCEEDED:
        record.failures = 0
        record.failures_until = 0.0
        record.captcha_until = 0.0
        return Settled(Verdict.SUCCEEDED)
    if record.locked_until > now:  # locked while this attempt was in flight
        return Settled(Verdict.LOCKED, locked_until=record.locked_until)
    if record.failures_until <= now:
        record.failures = 0
        record.failures_until = now + limits.lock_seconds
    record.failures += 1
    if limits.captcha_seconds:
        record.captcha_until = now + limits.captcha_seconds
    if record.failures >= limits.max_failures:
        record.locked_until = now + limits.lock_seconds
        record.failures = 0
        record.failures_until = 0.0
        return Settled(Verdict.LOCKED, limits.max_failures, record.locked_until)
    return Settled(Verdict.FAILED, record.failures)


def status(record: AttemptRecord | None, now: float) -> AttemptStatus:
    if record is None:
        return AttemptStatus(None, False)
    locked = record.locked_until if record.locked_until > now else None
    return AttemptStatus(locked, record.captcha_until > now)
