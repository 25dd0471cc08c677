"""Authenticate a request by its bearer access token (the gateway trusting its own tokens)."""

from __future__ import annotations

from starlette.requests import Request

from gateway import errors
from gateway.inputs import bearer_token
from gateway.tokens.claims import AccessTokenClaims
from gateway.tokens.verifier import AccessTokenVerifier, InvalidToken


async def authenticate(request: Request, verifier: AccessTokenVerifier) -> AccessTokenClaims:
    try:
        return await verifier.verify(bearer_token(request))
    except InvalidToken as exc:
        raise errors.Unauthorized(f"The access token is not valid: {exc}.", code="invalid_token") from exc
