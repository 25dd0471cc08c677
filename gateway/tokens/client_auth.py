"""Authenticate confidential clients (downstream services): a client secret (stored as its SHA-256
only) by HTTP Basic or form field, or `private_key_jwt` (RFC 7523, gateway/tokens/assertions.py)
signed by a key in the client's configured JWKS. Public clients (the desktop, the app) present only
their `client_id`. The OpenID provider's relying parties authenticate through `OidcProvider.client_of`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import Request

from gateway.settings import ConfidentialClient, Settings
from gateway.state.base import StateStore
from gateway.tokens.assertions import (
    ASSERTION_ALGORITHMS,
    ASSERTION_TYPE,
    ClientAssertions,
    InvalidClient,
    claimed_client,
    refuse,
)

__all__ = ["ASSERTION_ALGORITHMS", "ASSERTION_TYPE", "ClientAuthenticator", "InvalidClient", "refuse"]


class ClientAuthenticator:
    def __init__(self, settings: Settings, store: StateStore) -> None:
        self._clients = settings.confidential_clients
        self._audiences = {settings.issuer, f"{settings.issuer}/v1/token", f"{settings.issuer}/v1/introspect"}
        self._assertions = ClientAssertions(store)
        self._key_sets: dict[str, KeySet] = {}

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
        client_id, header = claimed_client(form["client_assertion"])
        client = self._client(client_id)
        if client.jwks is None:
            raise refuse("This client cannot authenticate with private_key_jwt.")
        key_set = self._key_sets.get(client_id)
        if key_set is None:
            try:
                key_set = self._key_sets[client_id] = KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                raise refuse("This client's configured JWKS does not parse.") from exc
        await self._assertions.verify(
            form["client_assertion"], client_id=client_id, key_set=key_set, header=header, audiences=self._audiences
        )
        return client_id
