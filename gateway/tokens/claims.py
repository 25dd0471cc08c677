"""Wire shapes of tokens (they match protocols/schemas/access-token-claims.json). The claims of a
verified token are defined in qrgate_verify, which downstream services share."""

from __future__ import annotations

from typing import TypedDict

from qrgate_verify.claims import AccessTokenClaims, Confirmation

__all__ = ["AccessTokenClaims", "Confirmation", "TokenResponse"]


class TokenResponse(TypedDict):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
