"""Authorizations (办税授权): the unit's legal representative lets a person act for the unit with the
real-name login alone. Only the legal representative grants, lists and revokes them (403 for anyone
else). A grantee with no role in the unit becomes its tax staff, and stops being so when the last of
its authorizations is revoked (a role the hall assigned stays). Every grant and revocation is audited.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, Any

from pydantic import AwareDatetime, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.inputs import StrictModel, read_json
from gateway.rules import mask_name
from gateway.units.access import caller
from gateway.units.http import json_response, path_tin, require_role, timestamp
from gateway.units.records import Authorization
from gateway.units.rules import UnitRole, UnitScope
from gateway.units.service import UnitsService

LEGAL_REP_ONLY = frozenset({UnitRole.LEGAL_REP})
_AUTHORIZATION_ID = re.compile(r"a_[A-Za-z0-9_-]{16,40}", re.ASCII)


class GrantRequest(StrictModel):
    grantee_identifier: str = Field(min_length=1, max_length=64, description="phone, login name or resident ID")
    grantee_name: str = Field(min_length=1, max_length=100, description="the grantee's real name, as registered")
    valid_until: Annotated[AwareDatetime, Field(strict=False)]


class PersonNotFound(errors.NotFound):
    code = "person_not_found"


class AuthorizationNotFound(errors.NotFound):
    code = "authorization_not_found"


def _same_name(a: str, b: str) -> bool:
    return unicodedata.normalize("NFC", a.strip()) == unicodedata.normalize("NFC", b.strip())


async def _view(service: UnitsService, record: Authorization, now: datetime) -> dict[str, Any]:
    grantee = await service.directory.get(record.grantee_id)
    return {
        "authorization_id": record.id,
        "tin": record.tin,
        "grantee": {
            "person_id": record.grantee_id,
            "display_name": mask_name(grantee.name) if grantee is not None else "*",
        },
        "grantor_id": record.grantor_id,
        "created_at": timestamp(record.created_at),
        "valid_until": timestamp(record.valid_until),
        "revoked_at": timestamp(record.revoked_at) if record.revoked_at is not None else None,
        "active": record.active(now),
    }


async def grant(service: UnitsService, request: Request) -> Response:
    claims = caller(request, UnitScope.MANAGE)
    tin = path_tin(request)
    await require_role(service, tin, claims["sub"], LEGAL_REP_ONLY)
    body = await read_json(request, GrantRequest)
    now = datetime.now(UTC)
    longest = timedelta(days=service.settings.units_authorization_max_days)
    if not now < body.valid_until <= now + longest:
        raise errors.BadRequest(
            f"valid_until must be in the future and at most {longest.days} days away.", code="invalid_valid_until"
        )
    grantee = await service.directory.find_by_identifier(body.grantee_identifier)
    if grantee is None or not _same_name(grantee.name, body.grantee_name):
        raise PersonNotFound("No registered person has this identifier and name.")
    record = await service.records.grant(
        tin=tin, grantor_id=claims["sub"], grantee_id=grantee.id, valid_until=body.valid_until
    )
    detail = f"{record.id} to {grantee.id} until {timestamp(record.valid_until)}"
    await service.audit.record("unit_authorization_granted", f"unit:{tin}", actor=claims["sub"], detail=detail)
    return json_response(await _view(service, record, now), status=201)


async def list_authorizations(service: UnitsService, request: Request) -> Response:
    claims = caller(request, UnitScope.MANAGE)
    tin = path_tin(request)
    await require_role(service, tin, claims["sub"], LEGAL_REP_ONLY)
    now = datetime.now(UTC)
    records = await service.records.authorizations(tin)
    return json_response({"authorizations": [await _view(service, record, now) for record in records]})


async def revoke(service: UnitsService, request: Request) -> Response:
    claims = caller(request, UnitScope.MANAGE)
    tin = path_tin(request)
    await require_role(service, tin, claims["sub"], LEGAL_REP_ONLY)
    authorization_id = str(request.path_params["authorization_id"])
    if not _AUTHORIZATION_ID.fullmatch(authorization_id):
        raise AuthorizationNotFound("The unit has no such authorization.")
    record, role_removed = await service.records.revoke(tin, authorization_id, revoked_by=claims["sub"])
    if record is None:
        raise AuthorizationNotFound("The unit has no such authorization.")
    await service.audit.record("unit_authorization_revoked", f"unit:{tin}", actor=claims["sub"], detail=record.id)
    if role_removed:
        detail = f"tax_staff of {record.grantee_id}, made by authorizations, ended with {record.id}"
        await service.audit.record("unit_role_removed", f"unit:{tin}", actor=claims["sub"], detail=detail)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


def routes(service: UnitsService) -> list[BaseRoute]:
    return [
        Route("/v1/units/{tin}/authorizations", partial(grant, service), methods=["POST"]),
        Route("/v1/units/{tin}/authorizations", partial(list_authorizations, service), methods=["GET"]),
        Route("/v1/units/{tin}/authorizations/{authorization_id}", partial(revoke, service), methods=["DELETE"]),
    ]
