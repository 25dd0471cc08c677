"""Registration (实名注册): verify an identity, then set login name, password, phone and region.

    POST /v1/registrations  {method: hall_code | face, identity..., registration_code | face_token,
                             agreement_version}
        -> 201 {registration_id, registration_token, expires_in}
    POST /v1/registrations/{registration_id}/complete
        {registration_token, login_name, password, phone, sms_challenge_id, sms_code, household_region?}
        -> 201 {person_id, login_name, log_in_with}

The registration agreement (用户注册协议) must be read and accepted first (【同意并继续】): the
start names the version accepted, which must be the current one (`AGREEMENT_VERSION`, the text on the
registration page); the version and the time of acceptance are recorded with the account. The
household region is asked of resident ID card holders only (a mainland household) and checked to the
county against GB/T 2260.

The registration id is in the URL, so it is not the secret: `registration_token` (body only,
stored hashed) is. Hall codes are bound to the identity they were issued for; guesses are counted
by the hall codes' `SecretGuard`, per identity (`registration_code_max_attempts`, then the code is
void until the hall issues a new one), and throttled per IP. A rule broken at completion answers
with that rule's code and keeps the registration open; a completed registration cannot complete
twice (atomic take), and the code is used up in the same transaction that creates the person.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, rules
from gateway.accounts.face import FaceVerifier
from gateway.accounts.identity import IdentityFields, identity_of, same_name
from gateway.accounts.records import AccountRecords, Conflict, Identity, new_registration_code
from gateway.accounts.sms import SmsChallenges
from gateway.directory.audit import AuditLog
from gateway.guard.guard import Attempt, CodeRefusals, SecretGuard
from gateway.guard.hashing import PasswordHashing
from gateway.guard.throttle import Throttle, key_part
from gateway.inputs import StrictModel, address_key, client_ip, read_json
from gateway.jsonutil import dumps
from gateway.settings import Settings
from gateway.state import keys
from gateway.state.attempts import AttemptLimits
from gateway.state.base import StateStore

NO_STORE = {"Cache-Control": "no-store"}
# The registration agreement's version: the text the registration page shows under this version.
# A new text gets a new version; starts naming an older one are refused until it is accepted anew.
AGREEMENT_VERSION = "2026-12-08"


class RegistrationStart(IdentityFields):
    method: Literal["hall_code", "face"]
    registration_code: str | None = Field(default=None, min_length=1, max_length=16)
    face_token: str | None = Field(default=None, min_length=1, max_length=4096)
    agreement_version: str | None = Field(default=None, min_length=1, max_length=32)


class RegistrationComplete(StrictModel):
    registration_token: str = Field(min_length=1, max_length=128)
    login_name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)
    phone: str = Field(min_length=1, max_length=20)
    sms_challenge_id: str = Field(min_length=1, max_length=64)
    sms_code: str = Field(min_length=1, max_length=16)
    household_region: str | None = Field(default=None, min_length=1, max_length=16)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def identity_key(identity: Identity) -> str:
    """An identity in store keys and counters (never the ID number itself)."""
    return key_part(f"{identity.id_type.value}:{identity.id_number}")


class HallCodeRefusals(CodeRefusals):
    def wrong_code(self, attempts_left: int) -> errors.GatewayError:
        return errors.BadRequest(
            "The registration code does not match this identity (ID type, ID number and name).",
            code="registration_code_invalid",
            attempts_left=attempts_left,
        )

    def exhausted(self) -> errors.GatewayError:
        return errors.BadRequest(
            "Too many wrong registration codes for this identity: the code is void. Ask the hall for a new one.",
            code="registration_code_exhausted",
        )


def _key(registration_id: str) -> str:
    return keys.key(keys.Space.REGISTRATION, registration_id[:64])


@dataclass(frozen=True, slots=True)
class Registrations:
    """Registration, and the hall codes it checks (issued by `HallDesk`, counted here)."""

    settings: Settings
    store: StateStore
    records: AccountRecords
    hashing: PasswordHashing
    sms: SmsChallenges
    face: FaceVerifier
    audit: AuditLog
    identity_ip: Throttle
    face_per_identity: Throttle
    code_guard: SecretGuard

    @classmethod
    def create(
        cls,
        settings: Settings,
        store: StateStore,
        *,
        records: AccountRecords,
        hashing: PasswordHashing,
        sms: SmsChallenges,
        audit: AuditLog,
        identity_ip: Throttle,
    ) -> Registrations:
        limits = AttemptLimits(
            settings.registration_code_max_attempts,
            settings.registration_code_ttl,
            settings.attempt_reservation_seconds,
        )
        return cls(
            settings=settings,
            store=store,
            records=records,
            hashing=hashing,
            sms=sms,
            face=FaceVerifier(settings),
            audit=audit,
            identity_ip=identity_ip,
            face_per_identity=Throttle(
                store,
                keys.Throttles.FACE_IDENTITY,
                settings.face_max_attempts,
                86400,
                what="face verifications for this identity today",
                code="face_attempts_exceeded",
            ),
            code_guard=SecretGuard(
                store, scope=keys.Guarded.REGISTRATION_CODE, limits=limits, refusals=HallCodeRefusals()
            ),
        )

    async def new_code(self, identity: Identity, *, staff_id: str) -> tuple[str, datetime]:
        """A hall code for `identity` (the identity's earlier code is replaced), with a fresh allowance."""
        code = new_registration_code()
        expires_at = await self.records.issue_code(
            identity, await self.hashing.hash(code), issued_by=staff_id, ttl=self.settings.registration_code_ttl
        )
        await self.code_guard.unlock(identity_key(identity))
        return code, expires_at

    async def check_hall_code(self, identity: Identity, code: str) -> str:
        """The id of the identity's active code if `code` is it."""
        active = await self.records.active_code(identity.id_type, identity.id_number)

        async def right() -> bool:
            # argon2id against a decoy when there is no code, so both cases take the same time.
            matches = await self.hashing.verify(active.code_hash if active else None, code.strip().upper())
            return matches and active is not None and same_name(active.identity.name, identity.name)

        async def void() -> None:
            if active is not None:
                await self.records.void_code(active.id)

        await self.code_guard.check(identity_key(identity), Attempt(ip=""), right, on_lock=void)
        assert active is not None
        if active.expires_at <= datetime.now(UTC):
            days = self.settings.registration_code_ttl / 86400
            raise errors.Gone(
                f"This registration code has expired (codes are valid {days:g} days): ask the hall for a new one.",
                code="registration_code_expired",
            )
        return active.id

    async def start(self, body: RegistrationStart, *, ip: str) -> dict[str, object]:
        if body.method == "hall_code" and (body.registration_code is None or body.face_token is not None):
            raise errors.BadRequest("Registration by hall code needs `registration_code`.", code="invalid_request")
        if body.method == "face" and (body.face_token is None or body.registration_code is not None):
            raise errors.BadRequest("Registration by face verification needs `face_token`.", code="invalid_request")
        if body.agreement_version is None:
            raise errors.BadRequest(
                "Read and accept the registration agreement first: send the `agreement_version` accepted.",
                code="agreement_not_accepted",
            )
        if body.agreement_version != AGREEMENT_VERSION:
            raise errors.BadRequest(
                f"The registration agreement has changed (now version {AGREEMENT_VERSION}): read and accept it again.",
                code="agreement_outdated",
                agreement_version=AGREEMENT_VERSION,
            )
        identity = identity_of(body)
        if body.method == "face":
            self.face.check_applicable(identity)
        await self.identity_ip.hit(address_key(ip))
        code_id = ""
        if body.registration_code is not None:
            code_id = await self.check_hall_code(identity, body.registration_code)
        elif body.face_token is not None:
            await self.face_per_identity.hit(identity_key(identity))
            await self.face.verify(identity, body.face_token)
        if await self.records.person_by_identity(identity.id_type, identity.id_number) is not None:
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
            "agreement_version": body.agreement_version,
            "agreement_accepted_at": datetime.now(UTC).isoformat(),
        }
        ttl = self.settings.registration_ttl
        await self.store.put(_key(registration_id), record, ttl)
        return {"registration_id": registration_id, "registration_token": token, "expires_in": ttl}

    async def complete(self, registration_id: str, body: RegistrationComplete) -> dict[str, object]:
        key = _key(registration_id)
        record = await self.store.get(key)
        if record is None:
            raise errors.NotFound(
                "No open registration has this id (it expired or was completed): verify the identity again.",
                code="registration_not_found",
            )
        if not hmac.compare_digest(record["token_hash"], _hash(body.registration_token)):
            raise errors.Forbidden(
                "The registration token is not this registration's.", code="registration_token_invalid"
            )
        login_name = rules.check_login_name(body.login_name)
        password = rules.check_password(body.password)
        phone = rules.check_phone(body.phone)
        identity = Identity(rules.IdType(record["id_type"]), record["id_number"], record["name"], record["nationality"])
        region = rules.household_region_for(identity.id_type, body.household_region)
        taken = await self.records.taken(login_name=login_name, phone=phone, identity=identity)
        if taken is not None:
            raise taken
        await self.sms.verify(body.sms_challenge_id, body.sms_code, "register", phone=phone)
        accepted = record.get("agreement_accepted_at")
        accepted_at = datetime.fromisoformat(accepted) if accepted else None
        if await self.store.take(key) is None:
            raise Conflict("This registration was completed already.", code="registration_already_completed")
        try:
            person_id = await self.records.register(
                identity,
                login_name=login_name,
                phone=phone,
                password_hash=await self.hashing.hash(password),
                household_region=region,
                method=record["method"],
                code_id=record["code_id"] or None,
                agreement_version=record.get("agreement_version"),  # None: started before it was recorded
                agreement_accepted_at=accepted_at,
            )
        except Conflict as conflict:
            if conflict.code in ("login_name_taken", "phone_taken"):  # lost a race: the person may choose again
                await self.store.put(key, record, self.settings.registration_ttl)
            raise
        await self.audit.record("person_registered", person_id, detail=f"by {record['method']}")
        log_in_with = ["phone", "login_name"] + (["id_number"] if identity.id_type is rules.IdType.RESIDENT_ID else [])
        return {"person_id": person_id, "login_name": login_name, "log_in_with": log_in_with}

    async def close(self) -> None:
        await self.face.close()


def routes(registrations: Registrations) -> list[BaseRoute]:
    async def start_registration(request: Request) -> Response:
        body = await read_json(request, RegistrationStart)
        answer = await registrations.start(body, ip=client_ip(request))
        return Response(dumps(answer), status_code=201, media_type="application/json", headers=NO_STORE)

    async def complete_registration(request: Request) -> Response:
        body = await read_json(request, RegistrationComplete)
        answer = await registrations.complete(request.path_params["registration_id"], body)
        return Response(dumps(answer), status_code=201, media_type="application/json", headers=NO_STORE)

    return [
        Route("/v1/registrations", start_registration, methods=["POST"]),
        Route("/v1/registrations/{registration_id}/complete", complete_registration, methods=["POST"]),
    ]
