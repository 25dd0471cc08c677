"""What the units routes share: the TIN in the path, membership, JSON answers."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.jsonutil import dumps
from gateway.units.records import Membership
from gateway.units.rules import UnitRole, check_tin
from gateway.units.service import UnitsService

NO_STORE = {"Cache-Control": "no-store"}


class NotUnitMember(errors.Forbidden):
    code = "not_unit_member"


class ForbiddenUnitRole(errors.Forbidden):
    code = "forbidden_unit_role"


def json_response(body: object, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=NO_STORE)


def path_tin(request: Request) -> str:
    return check_tin(str(request.path_params["tin"]))


async def require_member(service: UnitsService, tin: str, person_id: str) -> Membership:
    """The caller's role in the unit. An unknown unit and a unit without the caller answer alike."""
    membership = await service.records.membership(tin, person_id)
    if membership is None:
        raise NotUnitMember(
            f"You have no role in the unit {tin}; its legal representative or the tax service hall can add you."
        )
    return membership


async def require_role(service: UnitsService, tin: str, person_id: str, allowed: frozenset[UnitRole]) -> Membership:
    membership = await require_member(service, tin, person_id)
    if membership.role not in allowed:
        names = " or ".join(sorted(role.value for role in allowed))
        raise ForbiddenUnitRole(f"Only the unit's {names} may do this.")
    return membership


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC, to the second."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
