"""Hall staff (`hall_staff` role): registration codes and password resets at the counter.

Staff authenticate with their own access token; the token must carry the role and the directory
must still grant it (a revoked role takes effect at once, not when the token expires). Everyone
else gets 403 `forbidden_role`. Every action is audited with the staff member as actor.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.accounts.identity import IdentityFields, identity_of, person_with
from gateway.accounts.records import AccountRecords, Identity
from gateway.accounts.recovery import Recovery
from gateway.accounts.registration import Registrations, identity_key
from gateway.directory.audit import AuditLog
from gateway.directory.persons import PersonDirectory
from gateway.inputs import read_json
from gateway.jsonutil import dumps
from gateway.rules import HALL_STAFF, IdType
from gateway.tokens.bearer import BearerAuth

NO_STORE = {"Cache-Control": "no-store"}


def identity_subject(id_type: str, id_number: str) -> str:
    """How the audit log names an identity that has no person id yet (never the ID number itself)."""
    return "identity:" + identity_key(Identity(IdType(id_type), id_number, "", ""))


class HallPasswordReset(IdentityFields):
    mode: Literal["temporary_password", "reset_ticket"]


def temporary_password(length: int = 12) -> str:
    """Random, and within the password rules: upper, lower, digit and special, no look-alikes."""
    upper, lower, digits, special = "ABCDEFGHJKMNPQRSTUVWXYZ", "abcdefghijkmnpqrstuvwxyz", "23456789", "!#%+=?@"
    picks = [secrets.choice(group) for group in (upper, lower, digits, special)]
    picks += [secrets.choice(upper + lower + digits + special) for _ in range(length - len(picks))]
    secrets.SystemRandom().shuffle(picks)
    return "".join(picks)


@dataclass(frozen=True, slots=True)
class HallDesk:
    bearer: BearerAuth
    directory: PersonDirectory
    records: AccountRecords
    registrations: Registrations
    recovery: Recovery
    audit: AuditLog

    async def require_staff(self, request: Request) -> str:
        """The staff member's person id; 401 without a valid token, 403 `forbidden_role` without the role."""
        claims = await self.bearer.claims(request)
        roles = claims.get("roles", [])
        if HALL_STAFF not in roles or HALL_STAFF not in await self.directory.roles_of(claims["sub"]):
            raise errors.Forbidden("Only hall staff may do this.", code="forbidden_role")
        return claims["sub"]

    async def issue_registration_code(self, identity: Identity, *, staff_id: str) -> dict[str, object]:
        if await self.records.person_by_identity(identity.id_type, identity.id_number) is not None:
            raise errors.Conflict(
                "This identity is already registered: the person logs in, or resets a forgotten password.",
                code="person_exists",
            )
        code, expires_at = await self.registrations.new_code(identity, staff_id=staff_id)
        subject = identity_subject(identity.id_type.value, identity.id_number)
        await self.audit.record("registration_code_issued", subject, actor=staff_id)
        return {
            "registration_code": code,
            "expires_in": self.registrations.settings.registration_code_ttl,
            "expires_at": expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }

    async def reset_password(self, body: HallPasswordReset, *, staff_id: str) -> dict[str, object]:
        person = await person_with(self.records, identity_of(body))
        answer: dict[str, object] = {"mode": body.mode}
        if body.mode == "temporary_password":
            password = temporary_password()
            await self.recovery.set_new_password(
                person.id, password, actor=staff_id, how="hall temporary password", channel="hall", temporary=True
            )
            answer["temporary_password"] = password
        else:
            answer["reset_ticket"] = await self.recovery.new_ticket(person.id, channel="hall")
            answer["expires_in"] = self.recovery.settings.reset_ticket_ttl
            await self.audit.record("reset_ticket_issued", person.id, actor=staff_id, detail="at the hall")
        return answer


def routes(desk: HallDesk) -> list[BaseRoute]:
    async def issue_registration_code(request: Request) -> Response:
        staff_id = await desk.require_staff(request)
        identity = identity_of(await read_json(request, IdentityFields))
        body = await desk.issue_registration_code(identity, staff_id=staff_id)
        return Response(dumps(body), status_code=201, media_type="application/json", headers=NO_STORE)

    async def hall_password_reset(request: Request) -> Response:
        staff_id = await desk.require_staff(request)
        answer = await desk.reset_password(await read_json(request, HallPasswordReset), staff_id=staff_id)
        return Response(dumps(answer), media_type="application/json", headers=NO_STORE)

    return [
        Route("/v1/admin/registration-codes", issue_registration_code, methods=["POST"]),
        Route("/v1/admin/password-resets", hall_password_reset, methods=["POST"]),
    ]
