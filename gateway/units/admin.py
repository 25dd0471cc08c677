"""Hall staff (`hall_staff` role, checked in the token and in the directory): create units and assign
the roles of persons in them. Every change is audited with the staff member as actor. The same
operations, for operators, are `qrgate admin unit ...` (gateway/units/commands.py).
"""

from __future__ import annotations

import re
import unicodedata
from functools import partial

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.inputs import StrictModel, read_json
from gateway.units.access import require_hall_staff
from gateway.units.http import json_response, path_tin
from gateway.units.records import UnitNotFound
from gateway.units.rules import UnitRole, check_declaration_password, check_tin
from gateway.units.service import UnitsService

_PERSON_ID = re.compile(r"p_[A-Za-z0-9_-]{16,38}", re.ASCII)
MAX_UNIT_NAME = 200


class NewUnit(StrictModel):
    tin: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=MAX_UNIT_NAME)
    declaration_password: str | None = Field(default=None, min_length=1, max_length=64)


class RoleAssignment(StrictModel):
    identifier: str = Field(min_length=1, max_length=64, description="phone, login name or resident ID number")
    role: UnitRole = Field(strict=False)


def unit_name(value: str) -> str:
    name = unicodedata.normalize("NFC", value.strip())
    if not name or any(unicodedata.category(c).startswith("C") for c in name):
        raise errors.BadRequest("The unit name must be printable text.", code="invalid_unit_name")
    return name


async def create_unit(
    service: UnitsService, *, tin: str, name: str, declaration_password: str | None, actor: str
) -> str:
    """Validate and add a unit; returns its canonical TIN."""
    canonical = check_tin(tin)
    password = check_declaration_password(declaration_password) if declaration_password is not None else None
    password_hash = await service.hashing.hash(password) if password is not None else None
    await service.records.create(tin=canonical, name=unit_name(name), password_hash=password_hash, created_by=actor)
    await service.audit.record("unit_created", f"unit:{canonical}", actor=actor)
    return canonical


async def assign_role(service: UnitsService, tin: str, person_id: str, role: UnitRole, *, actor: str) -> str | None:
    displaced = await service.records.assign_role(tin, person_id, role, granted_by=actor)
    await service.audit.record("unit_role_assigned", f"unit:{tin}", actor=actor, detail=f"{person_id} {role.value}")
    if displaced is not None:
        await service.audit.record("unit_role_removed", f"unit:{tin}", actor=actor, detail=f"{displaced} legal_rep")
    return displaced


async def new_unit(service: UnitsService, request: Request) -> Response:
    staff_id = await require_hall_staff(request, service.directory)
    body = await read_json(request, NewUnit)
    tin = await create_unit(
        service, tin=body.tin, name=body.name, declaration_password=body.declaration_password, actor=staff_id
    )
    password_set = body.declaration_password is not None
    answer = {"tin": tin, "name": unit_name(body.name), "declaration_password_set": password_set}
    return json_response(answer, status=201)


async def put_role(service: UnitsService, request: Request) -> Response:
    staff_id = await require_hall_staff(request, service.directory)
    tin = path_tin(request)
    body = await read_json(request, RoleAssignment)
    person = await service.directory.find_by_identifier(body.identifier)
    if person is None:
        raise errors.NotFound("No registered person has this identifier.", code="person_not_found")
    displaced = await assign_role(service, tin, person.id, body.role, actor=staff_id)
    return json_response({"tin": tin, "person_id": person.id, "role": body.role.value, "replaced": displaced})


async def delete_role(service: UnitsService, request: Request) -> Response:
    staff_id = await require_hall_staff(request, service.directory)
    tin = path_tin(request)
    person_id = str(request.path_params["person_id"])
    if not _PERSON_ID.fullmatch(person_id) or not await service.records.remove_role(tin, person_id):
        if await service.records.get(tin) is None:
            raise UnitNotFound(f"There is no unit with the TIN {tin}.")
        raise errors.NotFound("This person has no role in the unit.", code="role_not_found")
    await service.audit.record("unit_role_removed", f"unit:{tin}", actor=staff_id, detail=person_id)
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


def routes(service: UnitsService) -> list[BaseRoute]:
    return [
        Route("/v1/admin/units", partial(new_unit, service), methods=["POST"]),
        Route("/v1/admin/units/{tin}/roles", partial(put_role, service), methods=["PUT"]),
        Route("/v1/admin/units/{tin}/roles/{person_id}", partial(delete_role, service), methods=["DELETE"]),
    ]
