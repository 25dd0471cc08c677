"""Password login: `POST /v1/login/password` by phone, login name or resident ID number.

The order of checks follows the rules of docs/domain.md and the contract in protocols/openapi.yaml:
1. per-IP throttle (429): spraying many accounts from one address;
2. lock (423): a locked subject is refused before anything else is looked at;
3. captcha (400 `captcha_required` / `captcha_invalid`) once the subject has had a wrong password;
   neither counts as an attempt, and a presented captcha is consumed either way;
4. the attempt is reserved, then the password verified (argon2id, a decoy hash for unknown
   identifiers, so both take the same time); the 5th failure locks, and the lock is audited.
Unknown identifiers go through exactly the same steps under a subject of their own.
"""

from __future__ import annotations

import hashlib
import unicodedata

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.accounts.lockout import Lockout
from gateway.accounts.rules import mask_name
from gateway.components import gateway_of
from gateway.inputs import StrictModel, client_ip, read_json
from gateway.jsonutil import dumps


class PasswordLogin(StrictModel):
    identifier: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)
    client_id: str = Field(min_length=1, max_length=64)
    captcha_id: str | None = Field(default=None, max_length=64)
    captcha_answer: str | None = Field(default=None, max_length=16)


def unknown_subject(identifier: str) -> str:
    """Unknown identifiers get a counter of their own, indistinguishable from a person's."""
    normal = unicodedata.normalize("NFC", identifier.strip())
    return "u_" + hashlib.sha256(normal.encode()).hexdigest()[:32]


async def password_login(request: Request) -> Response:
    gw = gateway_of(request)
    body = await read_json(request, PasswordLogin)
    if body.client_id not in gw.clients:
        raise errors.UnknownClient(f"Unknown client_id {body.client_id!r}.")
    ip = client_ip(request)
    await gw.accounts.login_ip.hit(ip)
    person = await gw.directory.find_by_identifier(body.identifier)
    subject = person.id if person is not None else unknown_subject(body.identifier)
    lockout: Lockout = gw.login_lockout
    locked = await lockout.locked(subject)
    if locked is not None:
        if body.captcha_id:
            await gw.accounts.captchas.solved(body.captcha_id, None)  # consumed either way
        raise locked
    if await lockout.captcha_required(subject):
        await gw.accounts.captchas.require(body.captcha_id, body.captcha_answer)
    elif body.captcha_id:
        await gw.accounts.captchas.solved(body.captcha_id, body.captcha_answer)
    attempt = await lockout.reserve_attempt(subject)
    ok = await gw.hashing.verify(person.password_hash if person else None, body.password)
    if person is None or not ok:
        failure = await lockout.failed(subject, attempt)
        if isinstance(failure, errors.Locked):
            await gw.accounts.audit.record("account_locked", subject, detail=f"wrong passwords; ip={ip}")
        raise failure
    await lockout.succeeded(subject)
    roles = await gw.directory.roles_of(person.id)
    tokens = await gw.sessions.start(
        subject=person.id, client_id=body.client_id, amr=["pwd"], roles=roles, display_name=mask_name(person.name)
    )
    return Response(dumps(tokens), media_type="application/json", headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [Route("/v1/login/password", password_login, methods=["POST"])]
