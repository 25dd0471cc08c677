"""Forgotten passwords: identity + SMS code to the registered phone -> a reset ticket -> a new
password. Setting a new password (here or at the hall) also unlocks the account, ends all of the
person's sessions, and is audited.

    POST /v1/sms/challenges {purpose: reset_password, identity}  -> code to the registered phone
    POST /v1/password/forgot {identity..., sms_challenge_id, sms_code} -> {reset_ticket, expires_in}
    POST /v1/password/reset {reset_ticket, new_password}            -> 204

Tickets are random, single use (taken atomically), short-lived, and stored only as hashes.
"""

from __future__ import annotations

import hashlib
import secrets

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, rules
from gateway.accounts.identity import IdentityFields, identity_of, person_with
from gateway.components import Gateway, gateway_of
from gateway.inputs import StrictModel, client_ip, read_json
from gateway.jsonutil import dumps

NO_STORE = {"Cache-Control": "no-store"}


class ResetTicketInvalid(errors.BadRequest):
    code = "reset_ticket_invalid"


def _ticket_key(ticket: str) -> str:
    return "reset-ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


async def new_ticket(gw: Gateway, person_id: str) -> str:
    ticket = secrets.token_urlsafe(32)
    await gw.store.put(_ticket_key(ticket), {"person_id": person_id}, gw.settings.reset_ticket_ttl)
    return ticket


async def set_new_password(gw: Gateway, person_id: str, password: str, *, actor: str, how: str) -> None:
    """The one way a password changes after registration: hash, store, unlock, end sessions, audit."""
    password_hash = await gw.hashing.hash(rules.check_password(password))
    await gw.accounts.records.set_password(person_id, password_hash)
    was_locked = await gw.login_guard.unlock(person_id)
    ended = await gw.sessions.end_sessions_of(person_id)
    await gw.accounts.audit.record("password_reset", person_id, actor=actor, detail=f"{how}; {ended} sessions ended")
    if was_locked:
        await gw.accounts.audit.record("account_unlocked", person_id, actor=actor, detail=how)


class ForgotPassword(IdentityFields):
    sms_challenge_id: str = Field(min_length=1, max_length=64)
    sms_code: str = Field(min_length=1, max_length=16)


async def forgot_password(request: Request) -> Response:
    gw = gateway_of(request)
    body = await read_json(request, ForgotPassword)
    identity = identity_of(body)
    await gw.accounts.identity_ip.hit(client_ip(request))
    person = await person_with(gw.accounts.records, identity)
    await gw.accounts.sms.verify(body.sms_challenge_id, body.sms_code, "reset_password", person_id=person.id)
    answer = {"reset_ticket": await new_ticket(gw, person.id), "expires_in": gw.settings.reset_ticket_ttl}
    return Response(dumps(answer), media_type="application/json", headers=NO_STORE)


class PasswordReset(StrictModel):
    reset_ticket: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=1, max_length=128)


async def reset_password(request: Request) -> Response:
    gw = gateway_of(request)
    body = await read_json(request, PasswordReset)
    invalid = ResetTicketInvalid("The reset ticket is wrong, used or expired; verify your identity again.")
    if await gw.store.get(_ticket_key(body.reset_ticket)) is None:
        raise invalid
    rules.check_password(body.new_password)  # a broken rule keeps the ticket usable
    record = await gw.store.take(_ticket_key(body.reset_ticket))
    if record is None:
        raise invalid
    person_id = record["person_id"]
    await set_new_password(gw, person_id, body.new_password, actor=person_id, how="forgotten password")
    return Response(status_code=204, headers=NO_STORE)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/password/forgot", forgot_password, methods=["POST"]),
        Route("/v1/password/reset", reset_password, methods=["POST"]),
    ]
