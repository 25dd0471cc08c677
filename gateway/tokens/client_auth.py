"""Authenticate confidential clients (downstream services): a client secret (stored as its SHA-256
only) by HTTP Basic or form field, or `private_key_jwt` (RFC 7523) signed by a key in the client's
configured JWKS. Public clients (the desktop, the app) present only their `client_id`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import Request

from gateway import errors
from gateway.jsonutil import loads
from gateway.settings import ConfidentialClient, Settings
from gateway.state import keys
from gateway.state.base import StateStore
from qrgate_verify.verifier import unverified_header

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["ES256", "EdDSA", "Ed25519", "RS256", "PS256"]


class InvalidClient(errors.Unauthorized):
    code = "invalid_client"


def refuse(detail: str) -> InvalidClient:
    return InvalidClient(detail, error="invalid_client", headers={"WWW-Authenticate": 'Basic realm="qrgate"'})


class ClientAuthenticator:
    def __init__(self, settings: Settings, store: StateStore) -> None:
        self._clients = settings.confidential_clients
        self._audiences = {settings.issuer, f"{settings.issuer}/v1/token", f"{settings.issuer}/v1/introspect"}
        self._store = store

    async def authenticate(self, request: Request, form: dict[str, str]) -> str | None:
        """The authenticated confidential client's id; None when the request carries no client
        authentication at all; InvalidClient when it carries a wrong one."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            client_id, secret = self._basic(header[6:])
            return self._check_secret(client_id, secret)
        if "client_assertion" in form:
            return await self._check_assertion(form)
        if "client_secret" in form:
            return self._check_secret(form.get("client_id", ""), form["client_secret"])
        return None

    def _basic(self, encoded: str) -> tuple[str, str]:
        try:
            decoded = base64.b64decode(encoded.strip().encode("latin-1"), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise refuse("Malformed Basic credentials.") from exc
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise refuse("Malformed Basic credentials.")
        return client_id, secret

    def _client(self, client_id: str) -> ConfidentialClient:
        client = self._clients.get(client_id)
        if client is None:
            raise refuse("Unknown client or wrong credentials.")
        return client

    def _check_secret(self, client_id: str, secret: str) -> str:
        client = self._clients.get(client_id)
        expected = client.secret_sha256 if client else None
        actual = hashlib.sha256(secret.encode()).hexdigest()
        # Compare even for unknown clients, so timing does not reveal which ids exist.
        if not hmac.compare_digest(expected or "0" * 64, actual) or expected is None:
            raise refuse("Unknown client or wrong credentials.")
        return client_id

    async def _check_assertion(self, form: dict[str, str]) -> str:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise refuse(f"client_assertion_type must be {ASSERTION_TYPE}.")
        assertion = form["client_assertion"]
        if len(assertion) > 8192:
            raise refuse("The client assertion is too large.")
        try:
            unverified = unverified_header(assertion)
            payload = assertion.split(".")[1]
            claimed: dict[str, Any] = loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            client_id = str(claimed.get("iss", ""))  # inside the try: the payload may be no JSON object
        except Exception as exc:
            raise refuse("The client assertion is malformed.") from exc
        client = self._client(client_id)
        if client.jwks is None or unverified.get("alg") not in ASSERTION_ALGORITHMS:
            raise refuse("This client cannot authenticate with private_key_jwt.")
        try:
            token = jwt.decode(assertion, KeySet.import_key_set(client.jwks), algorithms=ASSERTION_ALGORITHMS)  # type: ignore[arg-type]
        except (JoseError, ValueError) as exc:
            raise refuse("The client assertion's signature is not valid.") from exc
        claims = token.claims
        audience = claims.get("aud")
        audiences = {a for a in (audience if isinstance(audience, list) else [audience]) if isinstance(a, str)}
        now = time.time()
        exp = claims.get("exp")
        if (
            claims.get("sub") != client_id
            or not audiences & self._audiences
            or not isinstance(exp, int | float)
            or not now - 30 <= exp <= now + 600
            or not isinstance(claims.get("jti"), str)
        ):
            raise refuse("The client assertion's claims are not acceptable (iss, sub, aud, exp, jti).")
        if await self._store.hit(keys.key(keys.Space.CLIENT_ASSERTION, client_id, claims["jti"]), 660) > 1:
            raise refuse("The client assertion was replayed.")
        return client_id
