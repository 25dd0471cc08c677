"""Password login: `POST /v1/login/password` by phone, login name or resident ID number."""

from __future__ import annotations

import hashlib
import unicodedata

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.accounts.lockout import Lockout
from gateway.components import gateway_of
from gateway.inputs import StrictModel, read_json
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
    person = await gw.directory.find_by_identifier(body.identifier)
    subject = person.id if person is not None else unknown_subject(body.identifier)
    lockout: Lockout = gw.login_lockout
    attempt = await lockout.reserve_attempt(subject)
    ok = await gw.hashing.verify(person.password_hash if person else None, body.password)
    if person is None or not ok:
        raise await lockout.failed(subject, attempt)
    await lockout.succeeded(subject)
    roles = await gw.directory.roles_of(person.id)
    tokens = await gw.issuer.start_session(subject=person.id, client_id=body.client_id, amr=["pwd"], roles=roles)
    return Response(dumps(tokens), media_type="application/json", headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    return [Route("/v1/login/password", password_login, methods=["POST"])]
