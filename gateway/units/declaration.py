"""Resetting a unit's declaration password (申报密码): by its legal representative or finance manager
through the app or WEB, with a recent login (RFC 9470 step-up: an older login answers 401
`insufficient_user_authentication`), or at the hall by staff. A reset unlocks the unit and clears
its counters; both the reset and the unlock are audited.
"""

from __future__ import annotations

from functools import partial

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import logs, metrics
from gateway.inputs import StrictModel, read_json
from gateway.units.access import caller, require_hall_staff, require_recent_login
from gateway.units.http import path_tin, require_role
from gateway.units.records import UnitNotFound
from gateway.units.rules import RESETTERS, UnitScope, check_declaration_password
from gateway.units.service import UnitsService


class NewDeclarationPassword(StrictModel):
    new_password: str = Field(min_length=1, max_length=64)


def _channel(how: str) -> str:
    """The metrics' label for who reset: the unit's officers, the hall, or the CLI."""
    return how if how in ("hall", "cli", "demo") else "unit_officer"


async def reset_declaration_password(service: UnitsService, tin: str, password: str, *, actor: str, how: str) -> None:
    """Set the new password's hash and unlock (the CLI's set-password goes through here too)."""
    password_hash = await service.hashing.hash(check_declaration_password(password))
    if not await service.records.set_password_hash(tin, password_hash):
        raise UnitNotFound(f"There is no unit with the TIN {tin}.")
    was_locked = await service.guard.unlock(tin)
    await service.audit.record("declaration_password_reset", f"unit:{tin}", actor=actor, detail=how)
    channel = _channel(how)
    metrics.labelled(metrics.PASSWORD_RESETS, "unit", channel).inc()
    logs.event("password_reset", scope="unit", how=channel, tin=tin)
    if was_locked:
        await service.audit.record("declaration_password_unlocked", f"unit:{tin}", actor=actor, detail=how)
        metrics.labelled(metrics.UNLOCKS, "unit", channel).inc()
        logs.event("unlocked", scope="unit", how=channel, tin=tin)


async def reset_by_unit(service: UnitsService, request: Request) -> Response:
    claims = caller(request, UnitScope.MANAGE)
    tin = path_tin(request)
    membership = await require_role(service, tin, claims["sub"], RESETTERS)
    require_recent_login(claims, service.settings.units_reset_max_auth_age)
    body = await read_json(request, NewDeclarationPassword)
    await reset_declaration_password(service, tin, body.new_password, actor=claims["sub"], how=membership.role.value)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


async def reset_at_hall(service: UnitsService, request: Request) -> Response:
    staff_id = await require_hall_staff(request, service.directory)
    tin = path_tin(request)
    body = await read_json(request, NewDeclarationPassword)
    await reset_declaration_password(service, tin, body.new_password, actor=staff_id, how="hall")
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


def routes(service: UnitsService) -> list[BaseRoute]:
    return [
        Route("/v1/units/{tin}/declaration-password", partial(reset_by_unit, service), methods=["PUT"]),
        Route("/v1/admin/units/{tin}/declaration-password", partial(reset_at_hall, service), methods=["PUT"]),
    ]
