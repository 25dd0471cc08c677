"""Lockout: N wrong secrets (the Nth included) lock the subject for a while.

An attempt is *reserved* in the store before the secret is checked, so parallel guesses cannot
slip past the limit: of 50 concurrent wrong guesses exactly `max_failures` are checked, the rest
are refused as locked without being looked at. The subject is a person id, or a hash of an unknown
identifier, so unknown accounts are counted and answered exactly like known ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway import errors
from gateway.state.base import StateStore


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_failures: int
    lock_seconds: int
    scope: str  # "login" for persons, "unit" for declaration passwords
    captcha_memory: int = 86400  # after a wrong secret, a captcha stays required this long (until a success)


class Lockout:
    def __init__(self, store: StateStore, policy: LockoutPolicy) -> None:
        self._store = store
        self._policy = policy

    def _keys(self, subject: str) -> tuple[str, str]:
        return f"{self._policy.scope}:fail:{subject}", f"{self._policy.scope}:lock:{subject}"

    def _captcha_key(self, subject: str) -> str:
        return f"{self._policy.scope}:captcha:{subject}"

    async def captcha_required(self, subject: str) -> bool:
        """True from the first wrong secret on, until a success or a password reset."""
        return await self._store.get(self._captcha_key(subject)) is not None

    async def locked(self, subject: str) -> errors.Locked | None:
        _, lock_key = self._keys(subject)
        lock = await self._store.get(lock_key)
        if lock is None:
            return None
        return self._locked_error(float(lock["until"]))

    def _locked_error(self, until: float) -> errors.Locked:
        retry_after = max(1, int(until - time.time() + 0.999))
        return errors.Locked(
            f"Too many wrong passwords. Try again in {retry_after // 60 + 1} minutes, "
            "or reset the password to unlock now.",
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
        )

    async def reserve_attempt(self, subject: str) -> int:
        """Count this attempt before checking the secret. Raises Locked when no attempt is left."""
        failure = await self.locked(subject)
        if failure is not None:
            raise failure
        fail_key, _ = self._keys(subject)
        attempt = await self._store.hit(fail_key, self._policy.lock_seconds)
        if attempt > self._policy.max_failures:
            raise (await self.locked(subject)) or self._locked_error(time.time() + self._policy.lock_seconds)
        return attempt

    async def failed(self, subject: str, attempt: int) -> errors.GatewayError:
        """The secret was wrong: the error to answer with (423 on the last attempt, else 401)."""
        await self._store.put(self._captcha_key(subject), {"since": repr(time.time())}, self._policy.captcha_memory)
        if attempt >= self._policy.max_failures:
            _, lock_key = self._keys(subject)
            until = time.time() + self._policy.lock_seconds
            await self._store.put(lock_key, {"until": repr(until)}, self._policy.lock_seconds)
            # The failure counter is left to expire (its TTL started at the first failure, so before the
            # lock ends): deleting it here would let a guess racing past `locked()` start a fresh count.
            return self._locked_error(until)
        return errors.InvalidCredentials(
            "The account or password is wrong.",
            attempts_left=self._policy.max_failures - attempt,
            captcha_required=True,
        )

    async def succeeded(self, subject: str) -> None:
        fail_key, _ = self._keys(subject)
        await self._store.delete(fail_key)
        await self._store.delete(self._captcha_key(subject))

    async def unlock(self, subject: str) -> bool:
        """Clear the lock and every counter; True when the subject was locked."""
        fail_key, lock_key = self._keys(subject)
        was_locked = await self._store.get(lock_key) is not None
        await self._store.delete(fail_key)
        await self._store.delete(lock_key)
        await self._store.delete(self._captcha_key(subject))
        return was_locked
