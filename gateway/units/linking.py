"""`POST /units/v1/units/link`: the first unit link (the notice's step 二). A person logged in with
their real name types a unit's taxpayer identification number and its declaration password; the right
pair makes them the unit's tax staff (`unit_roles.granted_by` = "link") and answers a unit token at
once, exactly as `verify` does.

The pair is checked by the unit's declaration-password guard, the very one `verify` uses (per-IP
throttle 429, lock 423, captcha after a wrong one, attempts admitted and settled atomically in the
store, argon2id off the loop), so a wrong pair counts against that unit's lockout. An unknown TIN (or a
unit with no declaration password yet) goes through the same steps against a guard record of its own
TIN and a decoy hash, and so answers exactly like a wrong password for a real unit (same status, body,
captcha and lock rules, same work): the endpoint tells nobody which units exist. A person who has a
role in the unit already is answered as `verify` would answer them.

Scope: `units.verify` (like verify, enter and renew).
"""

from __future__ import annotations

from functools import partial

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.inputs import read_json
from gateway.units.access import caller
from gateway.units.rules import MAX_TIN_INPUT, UnitScope, Via, check_tin
from gateway.units.service import UnitsService
from gateway.units.verification import VerifyRequest, check_declaration_password, entered, password_not_set


class LinkRequest(VerifyRequest):
    tin: str = Field(min_length=1, max_length=MAX_TIN_INPUT)


async def link(service: UnitsService, request: Request) -> Response:
    claims = caller(request, UnitScope.VERIFY)
    body = await read_json(request, LinkRequest)
    tin = check_tin(body.tin)
    person = claims["sub"]
    # The same two reads on every path (membership, then the unit), whoever asks about whichever TIN.
    membership = await service.records.membership(tin, person)
    unit = await service.records.get(tin)
    password_hash = unit.password_hash if unit is not None else None
    if membership is not None and not membership.password_set:
        raise password_not_set()  # a member may know their unit has no password yet, as verify tells them
    await check_declaration_password(service, request, tin=tin, password_hash=password_hash, body=body, actor=person)
    if membership is None:
        membership = await service.records.link(tin, person)
        if membership is None:
            raise errors.Conflict("The unit was removed at this moment.", code="unit_not_found")
        await service.audit.record("unit_linked", f"unit:{tin}", actor=person, detail=f"role={membership.role.value}")
    return await entered(service, claims, tin, membership.role, Via.DECLARATION_PASSWORD)


def routes(service: UnitsService) -> list[BaseRoute]:
    return [Route("/v1/units/link", partial(link, service), methods=["POST"])]
