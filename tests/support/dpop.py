"""A DPoP client key for tests: makes RFC 9449 proofs."""

from __future__ import annotations

import secrets
import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from gateway.tokens.dpop import access_token_hash


class DpopKey:
    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256")
        self.jkt = str(self.key.thumbprint())

    def proof(self, method: str, url: str, access_token: str | None = None, **overrides: Any) -> str:
        claims: dict[str, Any] = {"htm": method, "htu": url, "iat": int(time.time()), "jti": secrets.token_urlsafe(12)}
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        claims.update(overrides)
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        return jwt.encode(header, claims, self.key, algorithms=["ES256"])
