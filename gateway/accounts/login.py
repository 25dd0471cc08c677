"""Password login: `POST /v1/login/password` by phone, login name or resident ID number.

The password is checked by the login's `SecretGuard` (gateway/guard/guard.py): per-IP throttle (429),
lock (423), captcha once the subject has had a wrong password (400 `captcha_required` /
`captcha_invalid`, not counted), an attempt admitted atomically, argon2id (a decoy hash for unknown
identifiers, so both take the same time), then the verdict: 401 with `attempts_left`, the 5th locks
(audited). Unknown identifiers go through exactly the same steps under a subject of their own.

A right password that hall staff set (a temporary password) issues nothing: the answer is 403
`password_change_required` with a single-use `change_ticket` for `POST /v1/password/reset` (the
forgotten-password reset's ticket, stored hashed, short-lived), so the first login changes it.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, logs, metrics
from gateway.directory.audit import AuditLog
from gateway.directory.persons import Person, PersonDirectory
from gateway.guard.guard import Attempt, SecretGuard
from gateway.guard.hashing import PasswordHashing
from gateway.inputs import StrictModel, client_ip, read_json
from gateway.jsonutil import dumps
from gateway.rules import mask_name
from gateway.settings import ClientPolicy
from gateway.tokens.claims import TokenResponse
from gateway.tokens.sessions import SessionManager


class PasswordCredentials(StrictModel):
    """What a person types to sign in with a password (the login API and the sign-in page)."""

    identifier: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)
    captcha_id: str | None = Field(default=None, max_length=64)
    captcha_answer: str | None = Field(default=None, max_length=16)


class PasswordLogin(PasswordCredentials):
    client_id: str = Field(min_length=1, max_length=64)


def unknown_subject(identifier: str) -> str:
    """Unknown identifiers get a counter of their own, indistinguishable from a person's."""
    normal = unicodedata.normalize("NFC", identifier.strip())
    return "u_" + hashlib.sha256(normal.encode()).hexdigest()[:32]


class PasswordChangeRequired(errors.Forbidden):
    code = "password_change_required"


OUTCOME_OF_CODE = {
    "invalid_credentials": "invalid",
    "account_locked": "locked",
    "captcha_required": "captcha_required",
    "captcha_invalid": "captcha_invalid",
    "too_many_requests": "throttled",
    "attempts_in_progress": "throttled",
    "password_change_required": "change_required",
}


@dataclass(frozen=True, slots=True)
class PasswordLogins:
    directory: PersonDirectory
    hashing: PasswordHashing
    guard: SecretGuard
    sessions: SessionManager
    audit: AuditLog
    clients: Mapping[str, ClientPolicy]
    # A ticket for POST /v1/password/reset (Recovery.new_ticket), and how long it lives (s).
    change_ticket: Callable[[str], Awaitable[str]] | None = None
    change_ticket_ttl: int = 600

    async def login(self, body: PasswordLogin, *, ip: str) -> TokenResponse:
        if body.client_id not in self.clients:
            raise errors.UnknownClient(f"Unknown client_id {body.client_id!r}.")
        person = await self.authenticate(body, ip=ip)
        roles = await self.directory.roles_of(person.id)
        return await self.sessions.start(
            subject=person.id, client_id=body.client_id, amr=["pwd"], roles=roles, display_name=mask_name(person.name)
        )

    async def authenticate(self, body: PasswordCredentials, *, ip: str) -> Person:
        """The person whose password this is, after every check of the login guard (throttle, lock,
        captcha, the decoy hash for unknown identifiers, the verdict); issues nothing. The login API
        and the browser sign-in page (gateway/oidc/signin.py) both come through here. Every outcome is
        counted in `qrgate_password_logins_total` and written as a `password_login` event."""
        return await self._counted(self._authenticate(body, ip=ip), ip=ip, purpose="login")

    async def reauthenticate(self, person_id: str, password: str, attempt: Attempt) -> None:
        """The person of a session proves a fresh authentication by entering the password again (a QR
        confirm that gives the desktop a fresh login): the same guard as a login (throttle, lock,
        captcha rule, verdict), with the person's own counters, counted and logged like a login."""
        await self._counted(self._reauthenticate(person_id, password, attempt), ip=attempt.ip, purpose="qr_confirm")

    async def _counted(self, checking: Awaitable[Person], *, ip: str, purpose: str) -> Person:
        try:
            person = await checking
        except errors.GatewayError as refused:
            outcome = OUTCOME_OF_CODE.get(refused.code)
            if outcome is not None:  # not a refusal of the password (a store or database outage)
                metrics.labelled(metrics.PASSWORD_LOGINS, outcome).inc()
                logs.event("password_login", outcome=outcome, ip=ip, purpose=purpose)
            raise
        metrics.labelled(metrics.PASSWORD_LOGINS, "success").inc()
        logs.event("password_login", outcome="success", ip=ip, sub=person.id, purpose=purpose)
        return person

    async def _reauthenticate(self, person_id: str, password: str, attempt: Attempt) -> Person:
        await self.guard.throttle(attempt.ip)
        person = await self.directory.get(person_id)
        if person is None:
            raise errors.Unauthorized("The person of this token no longer exists.", code="invalid_token")
        found = person

        async def verify() -> bool:
            return await self.hashing.verify(found.password_hash, password)

        async def audit_lock() -> None:
            await self.audit.record(
                "account_locked", found.id, detail=f"wrong passwords at a QR confirm; ip={attempt.ip}"
            )

        await self.guard.check(found.id, attempt, verify, on_lock=audit_lock)
        await self._require_own_password(found)
        return found

    async def _authenticate(self, body: PasswordCredentials, *, ip: str) -> Person:
        await self.guard.throttle(ip)  # before the directory is asked anything
        person = await self.directory.find_by_identifier(body.identifier)
        subject = person.id if person is not None else unknown_subject(body.identifier)

        async def verify() -> bool:
            right = await self.hashing.verify(person.password_hash if person else None, body.password)
            return right and person is not None

        async def audit_lock() -> None:
            await self.audit.record("account_locked", subject, detail=f"wrong passwords; ip={ip}")

        await self.guard.check(subject, Attempt(ip, body.captcha_id, body.captcha_answer), verify, on_lock=audit_lock)
        assert person is not None  # a check that passed had a person's hash to pass
        await self._require_own_password(person)
        return person

    async def _require_own_password(self, person: Person) -> None:
        """A right password that hall staff set proves nothing further until it is changed (a login,
        and a fresh authentication at a QR confirm alike)."""
        if person.password_temporary and self.change_ticket is not None:
            raise PasswordChangeRequired(
                "This password was set at the tax service hall and must be changed now: "
                "set a new password with `change_ticket` (POST /v1/password/reset), then log in with it.",
                change_ticket=await self.change_ticket(person.id),
                expires_in=self.change_ticket_ttl,
            )


def routes(logins: PasswordLogins) -> list[BaseRoute]:
    async def password_login(request: Request) -> Response:
        tokens = await logins.login(await read_json(request, PasswordLogin), ip=client_ip(request))
        return Response(dumps(tokens), media_type="application/json", headers={"Cache-Control": "no-store"})

    return [Route("/v1/login/password", password_login, methods=["POST"])]
