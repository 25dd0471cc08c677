"""`SecretGuard`: the one sequence every secret check goes through.

    0. the per-IP throttle (429), where the secret has one: `throttle(ip)`, called by the handler
       first, before it looks anything up;
    1. admission, one atomic store step (gateway/state/attempts.py): lock (423), captcha rule
       (400 `captcha_required` / `captcha_invalid`, not counted), a place for this attempt; sent in
       one round trip with the presented captcha's check (the captcha is consumed whatever happens;
       should it prove wrong while one was due, the place is given back at once);
    2. the secret checked (argon2id off the loop, or whatever `verify` does);
    3. the verdict, one atomic store step: a failure answers 401 with `attempts_left`, the last one
       423 and the lock is reported to `on_lock`; a success clears the record.

Password login, the declaration password, SMS codes and hall codes share it, each with its own scope
(its own counters) and words (`Refusals`). An attempt that finds every place taken by attempts in
flight waits for their verdicts (they decide whether it is refused as locked or admitted) for at most
`BUSY_WAIT` seconds, then answers 429 `attempts_in_progress`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway import errors, logs, metrics
from gateway.guard.captcha import CaptchaInvalid, CaptchaRequired, Captchas
from gateway.guard.throttle import Throttle, TooManyRequests
from gateway.inputs import address_key
from gateway.state.attempts import (
    Admission,
    Admitted,
    AttemptLimits,
    AttemptStatus,
    CaptchaCheck,
    Outcome,
    Verdict,
)
from gateway.state.base import StateStore
from gateway.state.keys import Guarded

FIRST_WAIT = 0.005  # seconds; doubled up to LONGEST_WAIT while other attempts are in flight
LONGEST_WAIT = 0.1
BUSY_WAIT = 2.0  # the longest an attempt waits for the verdicts in flight (or a place's lifetime, if shorter)


class Refusals:
    """How a guard's refusals read. The defaults are the password login's (the contract's 401
    `invalid_credentials` and 423 `account_locked`); other secrets subclass this."""

    captcha_path = "/v1/captcha"
    wrong_text = "The account or password is wrong."
    locked_text = "Too many wrong passwords. Try again in {minutes} minutes, or reset the password to unlock now."

    def wrong(self, attempts_left: int, *, captcha_required: bool) -> errors.GatewayError:
        return errors.InvalidCredentials(
            self.wrong_text, attempts_left=attempts_left, captcha_required=captcha_required
        )

    def locked(self, until: float, *, just_now: bool) -> errors.GatewayError:
        """`just_now`: this attempt's failure locked it."""
        retry_after = max(1, math.ceil(until - time.time()))
        return errors.Locked(
            self.locked_text.format(minutes=math.ceil(retry_after / 60)),
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
        )


class CodeRefusals(Refusals, ABC):
    """For a one-time code (SMS, hall registration code): the last wrong try still reads as a wrong
    code (`attempts_left: 0`, the code is void from then on), and later tries as `exhausted`."""

    @abstractmethod
    def wrong_code(self, attempts_left: int) -> errors.GatewayError: ...

    @abstractmethod
    def exhausted(self) -> errors.GatewayError: ...

    def wrong(self, attempts_left: int, *, captcha_required: bool) -> errors.GatewayError:
        return self.wrong_code(attempts_left)

    def locked(self, until: float, *, just_now: bool) -> errors.GatewayError:
        return self.wrong_code(0) if just_now else self.exhausted()


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the client sent along with its secret."""

    ip: str
    captcha_id: str | None = None
    captcha_answer: str | None = None


class SecretGuard:
    def __init__(
        self,
        store: StateStore,
        *,
        scope: Guarded,
        limits: AttemptLimits,
        captchas: Captchas | None = None,
        ip_throttle: Throttle | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        if limits.captcha_seconds and captchas is None:
            raise ValueError("a captcha rule needs the captchas")
        self._store = store
        self._scope = scope
        self.limits = limits
        self._captchas = captchas
        self._ip_throttle = ip_throttle
        self._refusals = refusals or Refusals()

    def _key(self, subject: str) -> str:
        return f"{self._scope.value}:{subject}"

    async def throttle(self, ip: str) -> None:
        """Step 0: the per-IP throttle (429), before the handler looks anything up."""
        if self._ip_throttle is not None:
            await self._ip_throttle.hit(address_key(ip))  # an IPv6 /64 counts as one address

    async def check(
        self,
        subject: str,
        attempt: Attempt,
        verify: Callable[[], Awaitable[bool]],
        *,
        on_lock: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Return when `verify()` says the secret is right; raise the answer otherwise."""
        key, attempt_id = self._key(subject), secrets.token_hex(8)
        try:
            await self._enter(key, attempt_id, attempt)
        except (CaptchaRequired, CaptchaInvalid) as refused:
            reason = "required" if isinstance(refused, CaptchaRequired) else "invalid"
            metrics.labelled(metrics.CAPTCHA_FAILURES, self._scope.value, reason).inc()
            logs.event("captcha_failed", scope=self._scope.value, reason=reason, ip=attempt.ip)
            raise
        try:
            right = await verify()
        except BaseException:
            await asyncio.shield(self._release(key, attempt_id))
            raise
        settled = await self._store.settle_attempt(
            key, attempt_id, Outcome.SUCCEEDED if right else Outcome.FAILED, self.limits, time.time()
        )
        if settled.verdict is Verdict.SUCCEEDED:
            return
        if settled.verdict is Verdict.LOCKED:
            just_now = settled.failures > 0  # this attempt's failure locked it
            if just_now:
                metrics.labelled(metrics.LOCKOUTS, self._scope.value).inc()
                logs.event("locked", scope=self._scope.value)
                if on_lock is not None:
                    await on_lock()
            raise self._locked(settled.locked_until, just_now=just_now)
        raise self._refusals.wrong(
            self.limits.max_failures - settled.failures, captcha_required=bool(self.limits.captcha_seconds)
        )

    def _locked(self, until: float, *, just_now: bool) -> errors.GatewayError:
        """The lock's answer. Its end was set by whichever process settled the locking attempt, on that
        process's clock: one a second ahead of this one's would read as "121 minutes" of a 120-minute
        lock, so no lock is ever said to last longer than the lock period from now."""
        return self._refusals.locked(min(until, time.time() + self.limits.lock_seconds), just_now=just_now)

    async def _enter(self, key: str, attempt_id: str, attempt: Attempt) -> None:
        """Admit the attempt, with the captcha checked in the same round trip (the store pipelines
        both): a presented captcha is admitted as if solved, and should it prove wrong while one was
        due, the place is given back at once."""
        if self._captchas is None:
            admitted = await self._store.admit_attempt(key, attempt_id, CaptchaCheck.NONE, self.limits, time.time())
            return await self._answer(admitted, key, attempt_id, CaptchaCheck.NONE)
        presented = bool(attempt.captcha_id and attempt.captcha_answer)
        first = CaptchaCheck.PRESENTED if presented else CaptchaCheck.NONE
        admitted, captcha = await asyncio.gather(
            self._store.admit_attempt(key, attempt_id, first, self.limits, time.time()),
            self._captchas.check(attempt.captcha_id, attempt.captcha_answer),  # consumed whatever follows
        )
        if admitted.admission is Admission.ADMITTED and admitted.captcha_due and captcha is CaptchaCheck.WRONG:
            await self._release(key, attempt_id)
            raise self._captcha_invalid()
        await self._answer(admitted, key, attempt_id, captcha)

    async def _answer(self, admitted: Admitted, key: str, attempt_id: str, captcha: CaptchaCheck) -> None:
        """Return when admitted; answer a refusal; wait for the verdicts in flight while every place is taken."""
        deadline = time.monotonic() + min(BUSY_WAIT, self.limits.reservation_seconds)
        pause = FIRST_WAIT
        while True:
            match admitted.admission:
                case Admission.ADMITTED:
                    return
                case Admission.LOCKED:
                    raise self._locked(admitted.locked_until, just_now=False)
                case Admission.CAPTCHA_REQUIRED:
                    raise CaptchaRequired(
                        f"Answer a captcha (POST {self._refusals.captcha_path}) and send captcha_id and captcha_answer."
                    )
                case Admission.CAPTCHA_INVALID:
                    raise self._captcha_invalid()
            if time.monotonic() + pause > deadline:
                raise TooManyRequests(
                    "Other attempts at this secret are being checked; try again in a moment.",
                    retry_after=1,
                    code="attempts_in_progress",
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_WAIT)
            admitted = await self._store.admit_attempt(key, attempt_id, captcha, self.limits, time.time())

    @staticmethod
    def _captcha_invalid() -> CaptchaInvalid:
        return CaptchaInvalid("The captcha answer is wrong or the captcha has expired; request a new one.")

    async def _release(self, key: str, attempt_id: str) -> None:
        # If the store is unreachable too, the place lapses by itself within `reservation_seconds`.
        with contextlib.suppress(errors.ServiceUnavailable):
            await self._store.settle_attempt(key, attempt_id, Outcome.ABANDONED, self.limits, time.time())

    async def status(self, subject: str) -> AttemptStatus:
        return await self._store.attempt_status(self._key(subject), time.time())

    async def unlock(self, subject: str) -> bool:
        """Forget failures, lock and captcha rule (a password reset); True when it was locked."""
        return await self._store.clear_attempts(self._key(subject), time.time())
