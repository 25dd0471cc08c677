"""Hall staff (`hall_staff` role): registration codes and password resets at the counter.

Staff authenticate with their own access token; the token must carry the role and the directory
must still grant it (a revoked role takes effect at once, not when the token expires). Everyone
else gets 403 `forbidden_role`. Every action is audited with the staff member as actor.
"""

from __future__ import annotations

import secrets
from datetime import UTC
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.accounts import recovery
from gateway.accounts.identity import IdentityFields, identity_of, person_with
from gateway.accounts.parts import HALL_STAFF
from gateway.accounts.records import new_registration_code
from gateway.components import Gateway, gateway_of
from gateway.guard.throttle import key_part
from gateway.inputs import read_json
from gateway.jsonutil import dumps

NO_STORE = {"Cache-Control": "no-store"}


async def require_staff(request: Request, gw: Gateway) -> str:
    """The staff member's person id; 401 without a valid token, 403 `forbidden_role` without the role."""
    claims = await gw.bearer.claims(request)
    if HALL_STAFF not in claims.get("roles", []) or HALL_STAFF not in await gw.directory.roles_of(claims["sub"]):
        raise errors.Forbidden("Only hall staff may do this.", code="forbidden_role")
    return claims["sub"]


def identity_subject(id_type: str, id_number: str) -> str:
    """How the audit log names an identity that has no person id yet (never the ID number itself)."""
    return "identity:" + key_part(f"{id_type}:{id_number}")


async def issue_registration_code(request: Request) -> Response:
    gw = gateway_of(request)
    staff_id = await require_staff(request, gw)
    identity = identity_of(await read_json(request, IdentityFields))
    if await gw.accounts.records.person_by_identity(identity.id_type, identity.id_number) is not None:
        raise errors.Conflict(
            "This identity is already registered: the person logs in, or resets a forgotten password.",
            code="person_exists",
        )
    code = new_registration_code()
    ttl = gw.settings.registration_code_ttl
    expires_at = await gw.accounts.records.issue_code(
        identity, await gw.hashing.hash(code), issued_by=staff_id, ttl=ttl
    )
    # A fresh code gets a fresh allowance of guesses.
    await gw.store.delete(f"regcode-tries:{key_part(f'{identity.id_type.value}:{identity.id_number}')}")
    subject = identity_subject(identity.id_type.value, identity.id_number)
    await gw.accounts.audit.record("registration_code_issued", subject, actor=staff_id)
    body = {
        "registration_code": code,
        "expires_in": ttl,
        "expires_at": expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    return Response(dumps(body), status_code=201, media_type="application/json", headers=NO_STORE)


class HallPasswordReset(IdentityFields):
    mode: Literal["temporary_password", "reset_ticket"]


def temporary_password(length: int = 12) -> str:
    """Random, and within the password rules: upper, lower, digit and special, no look-alikes."""
    upper, lower, digits, special = "ABCDEFGHJKMNPQRSTUVWXYZ", "abcdefghijkmnpqrstuvwxyz", "23456789", "!#%+=?@"
    picks = [secrets.choice(group) for group in (upper, lower, digits, special)]
    picks += [secrets.choice(upper + lower + digits + special) for _ in range(length - len(picks))]
    secrets.SystemRandom().shuffle(picks)
    return "".join(picks)


async def hall_password_reset(request: Request) -> Response:
    gw = gateway_of(request)
    staff_id = await require_staff(request, gw)
    body = await read_json(request, HallPasswordReset)
    person = await person_with(gw.accounts.records, identity_of(body))
    answer: dict[str, object] = {"mode": body.mode}
    if body.mode == "temporary_password":
        password = temporary_password()
        await recovery.set_new_password(gw, person.id, password, actor=staff_id, how="hall temporary password")
        answer["temporary_password"] = password
    else:
        answer["reset_ticket"] = await recovery.new_ticket(gw, person.id)
        answer["expires_in"] = gw.settings.reset_ticket_ttl
        await gw.accounts.audit.record("reset_ticket_issued", person.id, actor=staff_id, detail="at the hall")
    return Response(dumps(answer), media_type="application/json", headers=NO_STORE)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/admin/registration-codes", issue_registration_code, methods=["POST"]),
        Route("/v1/admin/password-resets", hall_password_reset, methods=["POST"]),
    ]
