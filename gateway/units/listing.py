"""`GET /units/v1/units`: the units the caller does tax work for, and how each can be entered.

The answer names the person too, masked (`person.display_name`, 张*), for the page's "logged in as".
With one unit the desktop asks for its declaration password at once (or enters it, when an
authorization applies); with several the person picks one first (docs/domain.md, unit verification 2).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import TypedDict

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.rules import mask_name
from gateway.units.access import caller
from gateway.units.http import json_response, timestamp
from gateway.units.rules import UnitScope
from gateway.units.service import UnitsService


class UnitView(TypedDict):
    tin: str
    name: str
    role: str
    authorized: bool
    authorized_until: str | None
    declaration_password_set: bool
    locked: bool
    locked_until: str | None
    captcha_required: bool


async def list_units(service: UnitsService, request: Request) -> Response:
    claims = caller(request, UnitScope.READ)
    now = datetime.now(UTC)
    memberships = await service.records.memberships(claims["sub"])
    authorized = await service.records.active_authorizations(claims["sub"], now) if memberships else {}
    views: list[UnitView] = []
    for unit in memberships:
        guarded = await service.guard.status(unit.tin)
        until = authorized.get(unit.tin)
        views.append(
            {
                "tin": unit.tin,
                "name": unit.name,
                "role": unit.role.value,
                "authorized": until is not None,
                "authorized_until": timestamp(until) if until is not None else None,
                "declaration_password_set": unit.password_set,
                "locked": guarded.locked_until is not None,
                "locked_until": (
                    timestamp(datetime.fromtimestamp(guarded.locked_until, UTC)) if guarded.locked_until else None
                ),
                "captcha_required": guarded.captcha_required,
            }
        )
    # Who is logged in, as the unit list shows it: the masked name only (张*), never the full name.
    person = await service.directory.get(claims["sub"])
    return json_response({"units": views, "person": {"display_name": mask_name(person.name) if person else "*"}})


def routes(service: UnitsService) -> list[BaseRoute]:
    return [Route("/v1/units", partial(list_units, service), methods=["GET"])]
