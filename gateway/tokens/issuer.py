"""Issue access tokens (JWT, RFC 9068). Refresh sessions are in `sessions`."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.settings import Settings
from gateway.tokens import jws
from gateway.tokens.claims import AccessTokenClaims
from gateway.tokens.keys import KeyFile, KeyRing


class TokenIssuer:
    def __init__(self, settings: Settings, keys: KeyFile) -> None:
        self._settings = settings
        self._keys = keys

    @property
    def ring(self) -> KeyRing:
        return self._keys.ring

    def access_token(
        self,
        *,
        subject: str,
        client_id: str,
        session_id: str,
        amr: Sequence[str],
        auth_time: int,
        audience: str | None = None,
        jkt: str | None = None,
        roles: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
        now: float | None = None,
        ttl: int | None = None,
    ) -> str:
        issued = int(time.time() if now is None else now)
        claims: AccessTokenClaims = {
            "iss": self._settings.issuer,
            "sub": subject,
            "aud": audience or self._settings.token_audience,
            "exp": issued + (ttl or self._settings.access_token_ttl),
            "iat": issued,
            "jti": secrets.token_urlsafe(16),
            "client_id": client_id,
            "sid": session_id,
            "amr": list(amr),
            "auth_time": auth_time,
        }
        if jkt:
            claims["cnf"] = {"jkt": jkt}
        if roles:
            claims["roles"] = list(roles)
        payload: dict[str, Any] = {**claims, **(extra or {})}
        key = self.ring.signing_key(issued)
        header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
        return jws.sign(header, payload, key)
