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

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from typing import Literal, Protocol

import httpx
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, logs, metrics, rules
from gateway.accounts.identity import IdentityFields, identity_of, same_name
from gateway.accounts.records import AccountRecords, Identity
from gateway.guard.captcha import CaptchaInvalid, CaptchaRequired, Captchas
from gateway.guard.guard import Attempt, CodeRefusals, SecretGuard
from gateway.guard.throttle import Throttle, key_part
from gateway.inputs import StrictModel, address_key, client_ip, read_json
from gateway.jsonutil import dumps
from gateway.settings import Settings
from gateway.state import keys
from gateway.state.attempts import AttemptLimits, CaptchaCheck
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


# Mobile number prefixes in use in mainland China: an unknown identity's made-up hint starts with one.
MOBILE_PREFIXES = (
    "130",
    "131",
    "132",
    "133",
    "134",
    "135",
    "136",
    "137",
    "138",
    "139",
    "145",
    "147",
    "150",
    "151",
    "152",
    "153",
    "155",
    "156",
    "157",
    "158",
    "159",
    "166",
    "171",
    "172",
    "173",
    "175",
    "176",
    "177",
    "178",
    "180",
    "181",
    "182",
    "183",
    "184",
    "185",
    "186",
    "187",
    "188",
    "189",
    "191",
    "198",
    "199",
)
UNKNOWN = "unknown:"  # the prefix of a challenge's "phone" and "person_id" made for an unknown identity


def identity_digest(secret: bytes, identity: Identity) -> str:
    """A keyed digest of an identity (never the identity itself in a key or a record)."""
    text = "\x1f".join((identity.id_type.value, identity.id_number, identity.name, identity.nationality or ""))
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def decoy_phone(digest: str) -> str:
    """A plausible mobile number derived from an unknown identity's digest: the same every time."""
    number = int(digest[:16], 16)
    prefix = MOBILE_PREFIXES[number % len(MOBILE_PREFIXES)]
    return f"{prefix}{(number // len(MOBILE_PREFIXES)) % 10**8:08d}"


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
        captchas: Captchas,
    ) -> None:
        self._settings = settings
        self._store = store
        self.sender = sender
        self._records = records
        self._identity_ip = identity_ip
        self._captchas = captchas
        configured = settings.unknown_identity_secret.get_secret_value()
        self._unknown_secret = configured.encode() if configured else secrets.token_bytes(32)
        self._send_seconds = 0.0  # a moving average of how long sending takes (an unknown identity waits as long)
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

    async def require_captcha(self, captcha_id: str | None, captcha_answer: str | None) -> None:
        """A solved captcha (consumed whatever the answer), or 400 `captcha_required` / `captcha_invalid`."""
        check = await self._captchas.check(captcha_id, captcha_answer)
        if check is CaptchaCheck.SOLVED:
            return
        reason = "required" if check is CaptchaCheck.NONE else "invalid"
        metrics.labelled(metrics.CAPTCHA_FAILURES, "sms-reset", reason).inc()
        logs.event("captcha_failed", scope="sms-reset", reason=reason)
        if check is CaptchaCheck.NONE:
            raise CaptchaRequired("Answer a captcha (POST /v1/captcha) and send captcha_id and captcha_answer.")
        raise CaptchaInvalid("The captcha answer is wrong or the captcha has expired; request a new one.")

    def unknown_subject(self, identity: Identity) -> str:
        """Who a challenge for an identity no account has is for: a keyed digest, the same every time."""
        return UNKNOWN + identity_digest(self._unknown_secret, identity)[:32]

    async def person_id_for(self, identity: Identity) -> str:
        """The id of the person registered with exactly this identity, else its `unknown_subject`."""
        person = await self._records.person_by_identity(identity.id_type, identity.id_number)
        if person is None or not same_name(person.name, identity.name):
            return self.unknown_subject(identity)
        return person.id

    async def issue_for_identity(self, identity: Identity, *, ip: str) -> dict[str, object]:
        """A `reset_password` code to the phone registered for `identity` (shown masked), so the
        code proves control of the account's phone. For an identity no account has, the same answer:
        a challenge is kept (with a code nobody is told, so verifying it fails like a wrong code) but no
        SMS is sent, and `phone_masked` is made up from a keyed digest of the identity (the same each
        time, a plausible mobile number), after about as long as sending takes."""
        await self._identity_ip.hit(address_key(ip))
        person = await self._records.person_by_identity(identity.id_type, identity.id_number)
        if person is None or not same_name(person.name, identity.name):
            subject = self.unknown_subject(identity)
            phone = decoy_phone(identity_digest(self._unknown_secret, identity))
            return await self.issue(phone=phone, purpose="reset_password", ip=ip, person_id=subject, send=False)
        return await self.issue(phone=person.phone, purpose="reset_password", ip=ip, person_id=person.id)

    async def issue(
        self, *, phone: str, purpose: Purpose, ip: str, person_id: str = "", send: bool = True
    ) -> dict[str, object]:
        """`send=False`: a challenge for an unknown identity (made-up `phone`): counted and kept the
        same way, but nothing is sent; it waits about as long as a send."""
        await self._per_ip.hit(address_key(ip))
        # A made-up phone may be someone's real number: its limits are counted under the unknown
        # identity instead, so asking about strangers never spends a real phone's budget.
        counted_as = phone if send else person_id
        await self._resend.hit(f"{purpose}:{counted_as}")
        await self._daily.hit(counted_as)
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
        started = time.monotonic()
        try:
            if send:
                await self.sender.send(phone=phone, code=code, purpose=purpose, challenge_id=challenge_id, ttl=ttl)
                self._send_seconds = 0.8 * self._send_seconds + 0.2 * (time.monotonic() - started)
            else:
                await asyncio.sleep(self._send_seconds * (0.75 + secrets.randbelow(500) / 1000))
        except SmsUnavailable:
            await self._store.delete(_key(challenge_id))
            await self._resend.forget(f"{purpose}:{counted_as}")  # nothing was sent: the person may retry at once
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
    # reset_password: a solved captcha first (POST /v1/captcha), as in the password login
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
            identity = identity_of(body.identity)  # a malformed identity is refused before the captcha is used
            await sms.require_captcha(body.captcha_id, body.captcha_answer)
            answer = await sms.issue_for_identity(identity, ip=ip)
        return Response(
            dumps(answer), status_code=201, media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    return [Route("/v1/sms/challenges", new_challenge, methods=["POST"])]
