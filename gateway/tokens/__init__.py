"""Tokens: what downstream services import to trust the gateway.

from gateway.tokens import AccessTokenVerifier, RemoteJwks, TokenAuthMiddleware, require_claims
"""

from gateway.tokens.claims import AccessTokenClaims
from gateway.tokens.starlette import TokenAuthMiddleware, require_claims
from gateway.tokens.verifier import AccessTokenVerifier, InvalidToken, RemoteJwks

__all__ = [
    "AccessTokenClaims",
    "AccessTokenVerifier",
    "InvalidToken",
    "RemoteJwks",
    "TokenAuthMiddleware",
    "require_claims",
]
