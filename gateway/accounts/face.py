"""Face verification: the client of the external service that compares a live photo with the
public-security portrait of a resident ID card. This gateway never judges faces itself.

The app's liveness SDK produces a `face_token` for the photo it took; the gateway sends the token
with the ID number and name to the configured service (HTTP Basic with the configured client id
and secret) and expects `{"verified": true|false}`:

    POST {face_verification_url}  {"id_type": "resident_id", "id_number", "name", "face_token"}

Disabled (no URL configured) it answers 501 `face_verification_disabled`, saying how to enable it.
"""

from __future__ import annotations

import logging

import httpx

from gateway import errors
from gateway.accounts.records import Identity
from gateway.rules import IdType
from gateway.settings import Settings

log = logging.getLogger("qrgate.face")


class FaceVerificationDisabled(errors.GatewayError):
    status = 501
    code = "face_verification_disabled"
    title = "Not implemented"


class FaceVerificationUnavailable(errors.ServiceUnavailable):
    code = "face_verification_unavailable"


class FaceVerifier:
    def __init__(self, settings: Settings) -> None:
        self._url = settings.face_verification_url
        self._client: httpx.AsyncClient | None = None
        if self._url:
            self._client = httpx.AsyncClient(
                timeout=settings.face_verification_timeout,
                auth=(settings.face_verification_client_id, settings.face_verification_secret.get_secret_value()),
                follow_redirects=False,
            )

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def check_applicable(self, identity: Identity) -> None:
        """Raise unless face verification is enabled and this identity can use it."""
        if self._client is None:
            raise FaceVerificationDisabled(
                "Registration by face verification is not enabled on this gateway: an operator sets "
                "QRGATE_FACE_VERIFICATION_URL, QRGATE_FACE_VERIFICATION_CLIENT_ID and "
                "QRGATE_FACE_VERIFICATION_SECRET to enable it. Meanwhile, register with a hall registration code."
            )
        if identity.id_type is not IdType.RESIDENT_ID:
            raise errors.BadRequest(
                "Face verification is for resident identity cards only; register with a hall registration code.",
                code="face_verification_resident_id_only",
            )

    async def verify(self, identity: Identity, face_token: str) -> None:
        """Return when the service says the face is the ID holder's; raise otherwise."""
        self.check_applicable(identity)
        assert self._client is not None
        payload = {
            "id_type": identity.id_type.value,
            "id_number": identity.id_number,
            "name": identity.name,
            "face_token": face_token,
        }
        try:
            response = await self._client.post(self._url, json=payload)
        except httpx.HTTPError as exc:
            log.warning("face verification unreachable: %s", type(exc).__name__)
            raise FaceVerificationUnavailable("Face verification is unavailable; try again shortly.") from exc
        if response.status_code in (400, 404, 410, 422):
            raise errors.BadRequest(
                "The face token is invalid or expired; take the live photo again.", code="face_token_invalid"
            )
        verdict = None
        if response.is_success:
            try:
                verdict = response.json().get("verified")
            except (ValueError, AttributeError):
                verdict = None
        if not isinstance(verdict, bool):
            log.warning("face verification answered %s without a verdict", response.status_code)
            raise FaceVerificationUnavailable("Face verification is unavailable; try again shortly.")
        if not verdict:
            raise errors.Forbidden(
                "The live photo does not match the ID card holder; try again, or register at the hall.",
                code="face_mismatch",
            )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
