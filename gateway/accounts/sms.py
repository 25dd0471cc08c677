"""SMS codes: `POST /v1/sms/challenges`, and the single-use check the flows that need one call.

A challenge is six random digits sent to a phone for one purpose. The store keeps only a salted
HMAC of the code, for `sms_code_ttl` seconds. Limits: one SMS per phone and purpose per
`sms_resend_interval`, `sms_daily_cap` per phone per day, `sms_ip_max` per IP, and
`sms_max_verify_attempts` tries per code, counted by the code's own `SecretGuard` (parallel guesses
cannot pass the limit; the last wrong one voids the code). A right code is taken (atomic
get-and-delete): it verifies once.

Senders: `dev` writes the code to the server log under a DEV-ONLY marker (Settings refuses it in
production); `webhook` POSTs it to the provider's HTTP endpoint with a bearer secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Literal, Protocol

import httpx
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, rules
from gateway.accounts.identity import IdentityFields, identity_of, person_with
from gateway.accounts.records import AccountRecords, Identity
from gateway.guard.guard import Attempt, CodeRefusals, SecretGuard
from gateway.guard.throttle import Throttle, key_part
from gateway.inputs import StrictModel, client_ip, read_json
from gateway.jsonutil import dumps
from gateway.settings import Settings
from gateway.state import keys
from gateway.state.attempts import AttemptLimits
from gateway.state.base import StateStore

log = logging.getLogger("qrgate.sms")

Purpose = Literal["register", "reset_password"]
PURPOSE_TEXT: dict[str, str] = {"register": "注册", "reset_password": "找回密码"}


class SmsUnavailable(errors.ServiceUnavailable):
    code = "sms_unavailable"


class SmsCodeInvalid(errors.BadRequest):
    code = "sms_code_invalid"


def mask_phone(phone: str) -> str:
    """13900000001 -> 139****0001."""
    return phone[:3] + "****" + phone[-4:]


class SmsSender(Protocol):
    async def send(self, *, phone: str, code: str, purpose: str, challenge_id: str, ttl: int) -> None: ...

    async def close(self) -> None: ...


class DevSmsSender:
    """Development only: the code goes to the server log, never to a phone."""

    async def send(self, *, phone: str, code: str, purpose: str, challenge_id: str, ttl: int) -> None:
        log.warning(
            "DEV-ONLY SMS (not sent; refused in production): to %s, %s, challenge %s: code %s",
            mask_phone(phone),
            purpose,
            challenge_id,
            code,
            extra={"sms_challenge_id": challenge_id, "sms_code": code, "sms_phone": phone},
        )

    async def close(self) -> None:
        return None


class WebhookSmsSender:
    """POST {phone, purpose, code, ttl, text} as JSON with `Authorization: Bearer <secret>`."""

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self._url = url
        self._client = httpx.AsyncClient(
            timeout=timeout, headers={"Authorization": f"Bearer {secret}"}, follow_redirects=False
        )

    async def send(self, *, phone: str, code: str, purpose: str, challenge_id: str, ttl: int) -> None:
        text = f"您的{PURPOSE_TEXT.get(purpose, '')}验证码是 {code}，{ttl // 60} 分钟内有效。请勿告诉他人。"
        payload = {"phone": phone, "purpose": purpose, "code": code, "ttl": ttl, "text": text, "id": challenge_id}
        try:
            response = await self._client.post(self._url, json=payload)
        except httpx.HTTPError as exc:
            log.warning("SMS webhook unreachable: %s", type(exc).__name__)
            raise SmsUnavailable("The SMS provider cannot be reached; try again shortly.") from exc
        if not response.is_success:
            log.warning("SMS webhook answered %s", response.status_code)
            raise SmsUnavailable("The SMS provider refused the message; try again shortly.")

    async def close(self) -> None:
        await self._client.aclose()


def create_sender(settings: Settings) -> SmsSender:
    if settings.sms_sender == "webhook":
        return WebhookSmsSender(
            settings.sms_webhook_url, settings.sms_webhook_secret.get_secret_value(), settings.sms_webhook_timeout
        )
    return DevSmsSender()


def _digest(salt: bytes, code: str) -> str:
    return hmac.new(salt, code.encode(), hashlib.sha256).hexdigest()


class SmsCodeRefusals(CodeRefusals):
    def wrong_code(self, attempts_left: int) -> errors.GatewayError:
        return SmsCodeInvalid(
            "The SMS code is wrong." + (" Request a new one." if attempts_left == 0 else ""),
            attempts_left=attempts_left,
        )

    def exhausted(self) -> errors.GatewayError:
        return SmsCodeInvalid("Too many wrong SMS codes: request a new one.", code="sms_attempts_exceeded")


def _key(challenge_id: str) -> str:
    return keys.key(keys.Space.SMS, challenge_id)


class SmsChallenges:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        sender: SmsSender,
        *,
        records: AccountRecords,
        identity_ip: Throttle,
    ) -> None:
        self._settings = settings
        self._store = store
        self.sender = sender
        self._records = records
        self._identity_ip = identity_ip
        self._per_ip = Throttle(
            store, keys.Throttles.SMS_IP, settings.sms_ip_max, settings.sms_ip_window, what="SMS requests"
        )
        self._resend = Throttle(
            store,
            keys.Throttles.SMS_RESEND,
            1,
            settings.sms_resend_interval,
            what="SMS codes to this phone",
            code="sms_too_soon",
        )
        self._daily = Throttle(
            store,
            keys.Throttles.SMS_DAY,
            settings.sms_daily_cap,
            86400,
            what="SMS codes to this phone today",
            code="sms_daily_limit",
        )
        limits = AttemptLimits(
            settings.sms_max_verify_attempts, settings.sms_code_ttl, settings.attempt_reservation_seconds
        )
        self._guard = SecretGuard(store, scope=keys.Guarded.SMS_CODE, limits=limits, refusals=SmsCodeRefusals())

    async def issue_for_identity(self, identity: Identity, *, ip: str) -> dict[str, object]:
        """A `reset_password` code to the phone registered for `identity` (shown masked), so the
        code proves control of the account's phone."""
        await self._identity_ip.hit(ip)
        person = await person_with(self._records, identity)
        return await self.issue(phone=person.phone, purpose="reset_password", ip=ip, person_id=person.id)

    async def issue(self, *, phone: str, purpose: Purpose, ip: str, person_id: str = "") -> dict[str, object]:
        await self._per_ip.hit(ip)
        await self._resend.hit(f"{purpose}:{phone}")
        await self._daily.hit(phone)
        code = f"{secrets.randbelow(10**6):06d}"
        challenge_id = secrets.token_urlsafe(16)
        salt = secrets.token_bytes(16)
        ttl = self._settings.sms_code_ttl
        record = {
            "purpose": purpose,
            "phone": phone,
            "person_id": person_id,
            "salt": salt.hex(),
            "digest": _digest(salt, code),
        }
        await self._store.put(_key(challenge_id), record, ttl)
        try:
            await self.sender.send(phone=phone, code=code, purpose=purpose, challenge_id=challenge_id, ttl=ttl)
        except SmsUnavailable:
            await self._store.delete(_key(challenge_id))
            await self._resend.forget(f"{purpose}:{phone}")  # nothing was sent: the person may retry at once
            raise
        return {
            "challenge_id": challenge_id,
            "expires_in": ttl,
            "resend_after": self._settings.sms_resend_interval,
            "phone_masked": mask_phone(phone),
        }

    async def verify(
        self, challenge_id: str, code: str, purpose: Purpose, *, phone: str | None = None, person_id: str | None = None
    ) -> None:
        """Pass once for the right code of a live challenge of this purpose (and phone or person)."""
        key = _key(challenge_id[:64])
        record = await self._store.get(key)
        wrong = SmsCodeInvalid("The SMS code is wrong, used or expired; request a new one if needed.")
        if (
            record is None
            or record["purpose"] != purpose
            or (phone is not None and record["phone"] != phone)
            or (person_id is not None and record["person_id"] != person_id)
        ):
            raise wrong

        async def right_code() -> bool:
            return len(code) == 6 and hmac.compare_digest(
                record["digest"], _digest(bytes.fromhex(record["salt"]), code)
            )

        async def void() -> None:
            await self._store.delete(key)

        await self._guard.check(key_part(challenge_id), Attempt(ip=""), right_code, on_lock=void)
        if await self._store.take(key) is None:
            raise wrong


class ChallengeRequest(StrictModel):
    purpose: Purpose
    phone: str | None = Field(default=None, max_length=20)
    identity: IdentityFields | None = None
    # Accepted (not yet checked here) so the forgotten-password page can send its captcha: the
    # captcha before a reset_password code is another change (answered alike for unknown identities).
    captcha_id: str | None = Field(default=None, max_length=64)
    captcha_answer: str | None = Field(default=None, max_length=16)


def routes(sms: SmsChallenges) -> list[BaseRoute]:
    async def new_challenge(request: Request) -> Response:
        """`register`: to the phone given. `reset_password`: to the phone registered for the identity given."""
        body = await read_json(request, ChallengeRequest)
        ip = client_ip(request)
        if body.purpose == "register":
            if body.phone is None or body.identity is not None:
                raise errors.BadRequest("A register code needs `phone` (and no identity).", code="invalid_request")
            answer = await sms.issue(phone=rules.check_phone(body.phone), purpose=body.purpose, ip=ip)
        else:
            if body.identity is None or body.phone is not None:
                raise errors.BadRequest(
                    "A reset_password code needs `identity`; it goes to the account's registered phone.",
                    code="invalid_request",
                )
            answer = await sms.issue_for_identity(identity_of(body.identity), ip=ip)
        return Response(
            dumps(answer), status_code=201, media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    return [Route("/v1/sms/challenges", new_challenge, methods=["POST"])]
