"""Registration (实名注册): verify an identity, then set login name, password, phone and region.

    POST /v1/registrations  {method: hall_code | face, identity..., registration_code | face_token}
        -> 201 {registration_id, registration_token, expires_in}
    POST /v1/registrations/{registration_id}/complete
        {registration_token, login_name, password, phone, sms_challenge_id, sms_code, household_region}
        -> 201 {person_id, login_name, log_in_with}

The registration id is in the URL, so it is not the secret: `registration_token` (body only,
stored hashed) is. Hall codes are bound to the identity they were issued for; guesses are reserved
before checking (`registration_code_max_attempts` per identity, then the code is void) and
throttled per IP. A rule broken at completion answers with that rule's code and keeps the
registration open; a completed registration cannot complete twice (atomic take), and the code is
used up in the same transaction that creates the person.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, rules
from gateway.accounts.identity import IdentityFields, identity_of, same_name
from gateway.accounts.records import Conflict, Identity
from gateway.components import Gateway, gateway_of
from gateway.guard.throttle import key_part
from gateway.inputs import StrictModel, client_ip, read_json
from gateway.jsonutil import dumps

NO_STORE = {"Cache-Control": "no-store"}


class RegistrationStart(IdentityFields):
    method: Literal["hall_code", "face"]
    registration_code: str | None = Field(default=None, min_length=1, max_length=16)
    face_token: str | None = Field(default=None, min_length=1, max_length=4096)


class RegistrationComplete(StrictModel):
    registration_token: str = Field(min_length=1, max_length=128)
    login_name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)
    phone: str = Field(min_length=1, max_length=20)
    sms_challenge_id: str = Field(min_length=1, max_length=64)
    sms_code: str = Field(min_length=1, max_length=16)
    household_region: str = Field(min_length=1, max_length=16)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _identity_key(identity: Identity) -> str:
    return key_part(f"{identity.id_type.value}:{identity.id_number}")


async def check_hall_code(gw: Gateway, identity: Identity, code: str) -> str:
    """The id of the identity's active code if `code` is it; every guess is counted first."""
    records, limit = gw.accounts.records, gw.settings.registration_code_max_attempts
    tries_key = f"regcode-tries:{_identity_key(identity)}"
    attempt = await gw.store.hit(tries_key, gw.settings.registration_code_ttl)
    active = await records.active_code(identity.id_type, identity.id_number)
    if attempt > limit:
        if active is not None:
            await records.void_code(active.id)
        raise errors.BadRequest(
            "Too many wrong registration codes for this identity: the code is void. Ask the hall for a new one.",
            code="registration_code_exhausted",
        )
    # argon2id against a decoy when there is no code, so both cases take the same time.
    right = await gw.hashing.verify(active.code_hash if active else None, code.strip().upper())
    if active is None or not right or not same_name(active.identity.name, identity.name):
        if attempt == limit and active is not None:
            await records.void_code(active.id)
        raise errors.BadRequest(
            "The registration code does not match this identity (ID type, ID number and name).",
            code="registration_code_invalid",
            attempts_left=limit - attempt,
        )
    if active.expires_at <= datetime.now(UTC):
        days = gw.settings.registration_code_ttl / 86400
        raise errors.Gone(
            f"This registration code has expired (codes are valid {days:g} days): ask the hall for a new one.",
            code="registration_code_expired",
        )
    await gw.store.delete(tries_key)
    return active.id


async def start_registration(request: Request) -> Response:
    gw = gateway_of(request)
    body = await read_json(request, RegistrationStart)
    if body.method == "hall_code" and (body.registration_code is None or body.face_token is not None):
        raise errors.BadRequest("Registration by hall code needs `registration_code`.", code="invalid_request")
    if body.method == "face" and (body.face_token is None or body.registration_code is not None):
        raise errors.BadRequest("Registration by face verification needs `face_token`.", code="invalid_request")
    identity = identity_of(body)
    if body.method == "face":
        gw.accounts.face.check_applicable(identity)
    await gw.accounts.identity_ip.hit(client_ip(request))
    code_id = ""
    if body.registration_code is not None:
        code_id = await check_hall_code(gw, identity, body.registration_code)
    elif body.face_token is not None:
        await gw.accounts.face_per_identity.hit(_identity_key(identity))
        await gw.accounts.face.verify(identity, body.face_token)
    if await gw.accounts.records.person_by_identity(identity.id_type, identity.id_number) is not None:
        raise Conflict(
            "This identity is already registered: log in, or reset a forgotten password.", code="person_exists"
        )
    registration_id, token = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
    record = {
        "token_hash": _hash(token),
        "method": body.method,
        "code_id": code_id,
        "id_type": identity.id_type.value,
        "id_number": identity.id_number,
        "name": identity.name,
        "nationality": identity.nationality,
    }
    ttl = gw.settings.registration_ttl
    await gw.store.put(f"registration:{registration_id}", record, ttl)
    answer = {"registration_id": registration_id, "registration_token": token, "expires_in": ttl}
    return Response(dumps(answer), status_code=201, media_type="application/json", headers=NO_STORE)


async def complete_registration(request: Request) -> Response:
    gw = gateway_of(request)
    registration_id: str = request.path_params["registration_id"]
    body = await read_json(request, RegistrationComplete)
    key = f"registration:{registration_id[:64]}"
    record = await gw.store.get(key)
    if record is None:
        raise errors.NotFound(
            "No open registration has this id (it expired or was completed): verify the identity again.",
            code="registration_not_found",
        )
    if not hmac.compare_digest(record["token_hash"], _hash(body.registration_token)):
        raise errors.Forbidden("The registration token is not this registration's.", code="registration_token_invalid")
    login_name = rules.check_login_name(body.login_name)
    password = rules.check_password(body.password)
    phone = rules.check_phone(body.phone)
    region = rules.check_household_region(body.household_region)
    identity = Identity(rules.IdType(record["id_type"]), record["id_number"], record["name"], record["nationality"])
    records = gw.accounts.records
    taken = await records.taken(login_name=login_name, phone=phone, identity=identity)
    if taken is not None:
        raise taken
    await gw.accounts.sms.verify(body.sms_challenge_id, body.sms_code, "register", phone=phone)
    if await gw.store.take(key) is None:
        raise Conflict("This registration was completed already.", code="registration_already_completed")
    try:
        person_id = await records.register(
            identity,
            login_name=login_name,
            phone=phone,
            password_hash=await gw.hashing.hash(password),
            household_region=region,
            method=record["method"],
            code_id=record["code_id"] or None,
        )
    except Conflict as conflict:
        if conflict.code in ("login_name_taken", "phone_taken"):  # lost a race: the person may choose again
            await gw.store.put(key, record, gw.settings.registration_ttl)
        raise
    await gw.accounts.audit.record("person_registered", person_id, detail=f"by {record['method']}")
    log_in_with = ["phone", "login_name"] + (["id_number"] if identity.id_type is rules.IdType.RESIDENT_ID else [])
    answer = {"person_id": person_id, "login_name": login_name, "log_in_with": log_in_with}
    return Response(dumps(answer), status_code=201, media_type="application/json", headers=NO_STORE)


def routes() -> list[BaseRoute]:
    return [
        Route("/v1/registrations", start_registration, methods=["POST"]),
        Route("/v1/registrations/{registration_id}/complete", complete_registration, methods=["POST"]),
    ]
