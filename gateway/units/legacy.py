"""The cut-over policy for legacy logins, which let a unit in without a person (docs/domain.md, unit
verification 5): CA-certificate login and declaration-password-only login.

Before `units_legacy_cutover` (00:00 China Standard Time; default 2020-01-01) they work and return a
unit token with `legacy: true`, `sub: "unit:<tin>"` and `unit.role: "unit"`, which cannot be renewed.
From that date on every legacy endpoint answers 410 `legacy_login_retired`, whatever the request,
with a message in Chinese and English telling the user to register with their real name in the app
or on the WEB and log in with that account.
"""

from __future__ import annotations

import secrets
import time
from functools import partial

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.inputs import StrictModel, read_json
from gateway.units.ca import CaProof, check_proof, issue_challenge, trust_of
from gateway.units.http import json_response
from gateway.units.records import UnitNotFound
from gateway.units.rules import LEGACY_ROLE, Via, check_tin, legacy_allowed, legacy_retired_message
from gateway.units.service import UnitsService
from gateway.units.verification import VerifyRequest, check_declaration_password

LEGACY_HOLDER = "legacy"
LEGACY_CLIENT = "withholding-desktop"


class LegacyPasswordLogin(VerifyRequest):
    tin: str = Field(min_length=1, max_length=32)


class LegacyChallengeRequest(StrictModel):
    tin: str = Field(min_length=1, max_length=32)


class LegacyLoginRetired(errors.Gone):
    code = "legacy_login_retired"


def require_before_cutover(service: UnitsService) -> None:
    cutover = service.settings.units_legacy_cutover
    if not legacy_allowed(cutover):
        raise LegacyLoginRetired(legacy_retired_message(cutover))


def legacy_token(service: UnitsService, tin: str, via: Via) -> Response:
    token = service.tokens.issue(
        subject=f"unit:{tin}",
        session_id=secrets.token_urlsafe(16),
        client_id=LEGACY_CLIENT,
        auth_time=int(time.time()),
        unit={"tin": tin, "role": LEGACY_ROLE, "via": via.value},
        legacy=True,
    )
    return json_response(token)


async def password_login(service: UnitsService, request: Request) -> Response:
    require_before_cutover(service)
    body = await read_json(request, LegacyPasswordLogin)
    tin = check_tin(body.tin)
    unit = await service.records.get(tin)
    # An unknown TIN is counted and answered exactly like a wrong password (a decoy hash is checked).
    password_hash = unit.password_hash if unit is not None else None
    await check_declaration_password(service, request, tin=tin, password_hash=password_hash, body=body, actor=None)
    await service.audit.record("unit_verified", f"unit:{tin}", detail="via=legacy_declaration_password")
    return legacy_token(service, tin, Via.DECLARATION_PASSWORD)


async def ca_challenge(service: UnitsService, request: Request) -> Response:
    require_before_cutover(service)
    trust_of(service)
    body = await read_json(request, LegacyChallengeRequest)
    return json_response(await issue_challenge(service, check_tin(body.tin), LEGACY_HOLDER), status=201)


async def ca_login(service: UnitsService, request: Request) -> Response:
    require_before_cutover(service)
    proof = await read_json(request, CaProof)
    tin = await check_proof(service, proof, holder=LEGACY_HOLDER)
    if await service.records.get(tin) is None:
        raise UnitNotFound(f"There is no unit with the TIN {tin}.")
    await service.audit.record("unit_verified", f"unit:{tin}", detail="via=legacy_ca")
    return legacy_token(service, tin, Via.CA)


def routes(service: UnitsService) -> list[BaseRoute]:
    return [
        Route("/v1/legacy/password-login", partial(password_login, service), methods=["POST"]),
        Route("/v1/legacy/ca-challenge", partial(ca_challenge, service), methods=["POST"]),
        Route("/v1/legacy/ca-login", partial(ca_login, service), methods=["POST"]),
    ]
