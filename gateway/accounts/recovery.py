"""Forgotten passwords: identity + SMS code to the registered phone -> a reset ticket -> a new
password. Setting a new password (here or at the hall) also unlocks the account, ends all of the
person's sessions, and is audited.

    POST /v1/sms/challenges {purpose: reset_password, identity}  -> code to the registered phone
    POST /v1/password/forgot {identity..., sms_challenge_id, sms_code} -> {reset_ticket, expires_in}
    POST /v1/password/reset {reset_ticket, new_password}            -> 204

Tickets are random (256 bits), single use (taken atomically), short-lived, and stored only as
hashes: a guess cannot be counted against anyone and has no chance worth counting, so tickets need no
attempt guard; the SMS code before them has one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, logs, metrics, rules
from gateway.accounts.identity import IdentityFields, identity_of
from gateway.accounts.records import AccountRecords
from gateway.accounts.sms import UNKNOWN, SmsChallenges, SmsCodeInvalid
from gateway.directory.audit import AuditLog
from gateway.guard.guard import SecretGuard
from gateway.guard.hashing import PasswordHashing
from gateway.guard.throttle import Throttle
from gateway.inputs import StrictModel, address_key, client_ip, read_json
from gateway.jsonutil import dumps
from gateway.settings import Settings
from gateway.state import keys
from gateway.state.base import StateStore
from gateway.tokens.sessions import SessionManager

NO_STORE = {"Cache-Control": "no-store"}


class ResetTicketInvalid(errors.BadRequest):
    code = "reset_ticket_invalid"


def _ticket_key(ticket: str) -> str:
    return keys.key(keys.Space.RESET_TICKET, hashlib.sha256(ticket.encode()).hexdigest())


class ForgotPassword(IdentityFields):
    sms_challenge_id: str = Field(min_length=1, max_length=64)
    sms_code: str = Field(min_length=1, max_length=16)


class PasswordReset(StrictModel):
    reset_ticket: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=1, max_length=128)


@dataclass(frozen=True, slots=True)
class Recovery:
    settings: Settings
    store: StateStore
    records: AccountRecords
    hashing: PasswordHashing
    login_guard: SecretGuard
    sessions: SessionManager
    sms: SmsChallenges
    audit: AuditLog
    identity_ip: Throttle

    async def new_ticket(self, person_id: str, *, channel: str = "forgotten_password") -> str:
        """`channel`: who verified the person (forgotten_password: SMS; hall: staff), for the metrics."""
        ticket = secrets.token_urlsafe(32)
        record = {"person_id": person_id, "channel": channel}
        await self.store.put(_ticket_key(ticket), record, self.settings.reset_ticket_ttl)
        return ticket

    async def set_new_password(
        self,
        person_id: str,
        password: str,
        *,
        actor: str,
        how: str,
        channel: str = "forgotten_password",
        temporary: bool = False,
    ) -> None:
        """The one way a password changes after registration: hash, store, unlock, end sessions, audit.
        `channel` (forgotten_password, hall) labels the metrics and events; `how` is the audit's words.
        A `temporary` one (hall staff's) must be changed at the next login; any other clears that."""
        password_hash = await self.hashing.hash(rules.check_password(password))
        await self.records.set_password(person_id, password_hash, temporary=temporary)
        was_locked = await self.login_guard.unlock(person_id)
        ended = await self.sessions.end_sessions_of(person_id)
        await self.audit.record("password_reset", person_id, actor=actor, detail=f"{how}; {ended} sessions ended")
        metrics.labelled(metrics.PASSWORD_RESETS, "login", channel).inc()
        logs.event("password_reset", scope="login", how=channel, sub=person_id, sessions_ended=ended)
        if was_locked:
            await self.audit.record("account_unlocked", person_id, actor=actor, detail=how)
            metrics.labelled(metrics.UNLOCKS, "login", channel).inc()
            logs.event("unlocked", scope="login", how=channel, sub=person_id)

    async def forgot(self, body: ForgotPassword, *, ip: str) -> dict[str, object]:
        identity = identity_of(body)
        await self.identity_ip.hit(address_key(ip))
        # An identity no account has reads like any other: its challenge (if one was asked for) has a
        # code nobody was told, so this fails as a wrong code would (sms_code_invalid, attempts_left).
        person_id = await self.sms.person_id_for(identity)
        await self.sms.verify(body.sms_challenge_id, body.sms_code, "reset_password", person_id=person_id)
        if person_id.startswith(UNKNOWN):  # not reachable: nobody knows such a challenge's code
            raise SmsCodeInvalid("The SMS code is wrong, used or expired; request a new one if needed.")
        return {"reset_ticket": await self.new_ticket(person_id), "expires_in": self.settings.reset_ticket_ttl}

    async def reset(self, body: PasswordReset) -> None:
        invalid = ResetTicketInvalid("The reset ticket is wrong, used or expired; verify your identity again.")
        if await self.store.get(_ticket_key(body.reset_ticket)) is None:
            raise invalid
        rules.check_password(body.new_password)  # a broken rule keeps the ticket usable
        record = await self.store.take(_ticket_key(body.reset_ticket))
        if record is None:
            raise invalid
        person_id = record["person_id"]
        channel = record.get("channel", "forgotten_password")
        how = "hall reset ticket" if channel == "hall" else "forgotten password"
        await self.set_new_password(person_id, body.new_password, actor=person_id, how=how, channel=channel)


def routes(recovery: Recovery) -> list[BaseRoute]:
    async def forgot_password(request: Request) -> Response:
        answer = await recovery.forgot(await read_json(request, ForgotPassword), ip=client_ip(request))
        return Response(dumps(answer), media_type="application/json", headers=NO_STORE)

    async def reset_password(request: Request) -> Response:
        await recovery.reset(await read_json(request, PasswordReset))
        return Response(status_code=204, headers=NO_STORE)

    return [
        Route("/v1/password/forgot", forgot_password, methods=["POST"]),
        Route("/v1/password/reset", reset_password, methods=["POST"]),
    ]
