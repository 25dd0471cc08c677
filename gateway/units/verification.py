"""Getting a unit token: by declaration password (`verify`), by authorization (`enter`), and renewing it.

The declaration password is checked by the unit's `SecretGuard` (gateway/guard/guard.py), exactly like
the person password at login, with counters of its own, one set per unit: per-IP throttle (429), lock
(423 `account_locked`), captcha (from `POST /units/v1/captcha`) once the unit has had a wrong password,
an attempt admitted atomically, argon2id off the loop, then 401 `invalid_credentials` with
`attempts_left`, the 5th locks (audited). Here only a person with a role in the unit gets that far;
the first unit link (gateway/units/linking.py) counts anyone's wrong pairs against the same record.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.guard import captcha
from gateway.guard.guard import Attempt
from gateway.inputs import StrictModel, client_ip, read_json
from gateway.tokens.claims import AccessTokenClaims
from gateway.units.access import caller
from gateway.units.http import json_response, path_tin, require_member
from gateway.units.rules import UnitRole, UnitScope, Via
from gateway.units.service import UnitsService
from gateway.units.tokens import UnitTokenResponse
from qrgate_verify.verifier import InvalidToken

MAX_UNIT_TOKEN = 8192


class VerifyRequest(StrictModel):
    declaration_password: str = Field(min_length=1, max_length=64)
    captcha_id: str | None = Field(default=None, max_length=64)
    captcha_answer: str | None = Field(default=None, max_length=16)


class RenewRequest(StrictModel):
    unit_token: str = Field(min_length=1, max_length=MAX_UNIT_TOKEN)


class DeclarationPasswordRequired(errors.Forbidden):
    code = "declaration_password_required"


def password_not_set() -> errors.Conflict:
    return errors.Conflict(
        "The unit has no declaration password yet: its legal representative or finance manager sets one "
        "in the app or on the WEB, or the hall does.",
        code="declaration_password_not_set",
    )


async def check_declaration_password(
    service: UnitsService,
    request: Request,
    *,
    tin: str,
    password_hash: str | None,
    body: VerifyRequest,
    actor: str | None,
) -> None:
    """Raise unless `body` carries the unit's declaration password (through the unit's guard).
    `password_hash` None (no such unit, no password set) is checked against a decoy and fails."""
    ip = client_ip(request)
    await service.guard.throttle(ip)

    async def verify() -> bool:
        return await service.hashing.verify(password_hash, body.declaration_password)

    async def audit_lock() -> None:
        await service.audit.record("declaration_password_locked", f"unit:{tin}", actor=actor, detail=f"ip={ip}")

    await service.guard.check(tin, Attempt(ip, body.captcha_id, body.captcha_answer), verify, on_lock=audit_lock)


def issue_for(
    service: UnitsService, claims: AccessTokenClaims, tin: str, role: UnitRole, via: Via
) -> UnitTokenResponse:
    return service.tokens.issue(
        subject=claims["sub"],
        session_id=claims["sid"],
        client_id=claims["client_id"],
        auth_time=claims["auth_time"],
        unit={"tin": tin, "role": role.value, "via": via.value},
        jkt=claims.get("cnf", {}).get("jkt"),
    )


async def entered(service: UnitsService, claims: AccessTokenClaims, tin: str, role: UnitRole, via: Via) -> Response:
    await service.audit.record("unit_verified", f"unit:{tin}", actor=claims["sub"], detail=f"via={via.value}")
    return json_response(issue_for(service, claims, tin, role, via))


async def verify(service: UnitsService, request: Request) -> Response:
    claims = caller(request, UnitScope.VERIFY)
    tin = path_tin(request)
    body = await read_json(request, VerifyRequest)
    membership = await require_member(service, tin, claims["sub"])
    if not membership.password_set:
        raise password_not_set()
    unit = await service.records.get(tin)
    password_hash = unit.password_hash if unit is not None else None
    await check_declaration_password(
        service, request, tin=tin, password_hash=password_hash, body=body, actor=claims["sub"]
    )
    return await entered(service, claims, tin, membership.role, Via.DECLARATION_PASSWORD)


async def enter(service: UnitsService, request: Request) -> Response:
    """An authorized person needs only the real-name login (docs/domain.md, unit verification 4)."""
    claims = caller(request, UnitScope.VERIFY)
    tin = path_tin(request)
    membership = await require_member(service, tin, claims["sub"])
    if await service.records.active_authorization(tin, claims["sub"], datetime.now(UTC)) is None:
        raise DeclarationPasswordRequired(
            f"No authorization of yours applies to this unit: enter its declaration password "
            f"(POST /units/v1/units/{tin}/verify)."
        )
    return await entered(service, claims, tin, membership.role, Via.AUTHORIZATION)


async def renew(service: UnitsService, request: Request) -> Response:
    """A fresh unit token for the same unit and session. The gateway access token proves the session
    lives; the right is checked again (a removed role or a revoked authorization ends renewals)."""
    claims = caller(request, UnitScope.VERIFY)
    body = await read_json(request, RenewRequest)
    try:
        current = await service.tokens.verify(body.unit_token)
    except InvalidToken as exc:
        raise errors.BadRequest(
            f"The unit token is not valid ({exc}): verify the unit again.", code="invalid_unit_token"
        ) from exc
    if current.get("legacy"):
        raise errors.Forbidden("A legacy login's unit token cannot be renewed.", code="unit_token_not_renewable")
    if current["sub"] != claims["sub"] or current["sid"] != claims["sid"]:
        raise errors.Forbidden("The unit token belongs to another login session.", code="session_mismatch")
    tin = current["unit"]["tin"]
    via = Via(current["unit"]["via"])
    membership = await require_member(service, tin, claims["sub"])
    if via is Via.AUTHORIZATION and (
        await service.records.active_authorization(tin, claims["sub"], datetime.now(UTC)) is None
    ):
        raise DeclarationPasswordRequired(
            f"Your authorization for this unit has ended: enter its declaration password "
            f"(POST /units/v1/units/{tin}/verify)."
        )
    return json_response(issue_for(service, claims, tin, membership.role, via))


def routes(service: UnitsService) -> list[BaseRoute]:
    return [
        captcha.route(service.captchas),
        Route("/v1/units/{tin}/verify", partial(verify, service), methods=["POST"]),
        Route("/v1/units/{tin}/enter", partial(enter, service), methods=["POST"]),
        Route("/v1/unit-token/renew", partial(renew, service), methods=["POST"]),
    ]
