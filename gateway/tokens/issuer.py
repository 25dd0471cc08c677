"""Issue access tokens (JWT, RFC 9068) and start refresh sessions (opaque tokens, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence

from joserfc import jwt

from gateway.settings import Settings
from gateway.state.base import StateStore
from gateway.tokens.claims import AccessTokenClaims, TokenResponse
from gateway.tokens.keys import KeyRing


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenIssuer:
    def __init__(self, settings: Settings, ring: KeyRing, store: StateStore) -> None:
        self._settings = settings
        self.ring = ring
        self._store = store

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
        now: float | None = None,
    ) -> str:
        issued = int(time.time() if now is None else now)
        claims: AccessTokenClaims = {
            "iss": self._settings.issuer,
            "sub": subject,
            "aud": audience or self._settings.token_audience,
            "exp": issued + self._settings.access_token_ttl,
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
        key = self.ring.signing_key(issued)
        header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
        return jwt.encode(header, dict(claims), key.key, algorithms=[key.alg])

    async def start_session(
        self,
        *,
        subject: str,
        client_id: str,
        amr: Sequence[str],
        device_name: str = "",
        jkt: str | None = None,
        roles: Sequence[str] = (),
    ) -> TokenResponse:
        """One login = one session (`sid`) with its first refresh token."""
        now = int(time.time())
        session_id = secrets.token_urlsafe(16)
        refresh_token = secrets.token_urlsafe(32)
        ttl = self._settings.refresh_token_ttl
        session = {
            "sub": subject,
            "client_id": client_id,
            "amr": " ".join(amr),
            "device_name": device_name,
            "jkt": jkt or "",
            "created_at": str(now),
            "auth_time": str(now),
            "refresh_hash": token_hash(refresh_token),
            "roles": " ".join(roles),
        }
        await self._store.put(f"session:{session_id}", session, ttl)
        await self._store.put(f"refresh:{token_hash(refresh_token)}", {"sid": session_id}, ttl)
        access = self.access_token(
            subject=subject,
            client_id=client_id,
            session_id=session_id,
            amr=amr,
            auth_time=now,
            jkt=jkt,
            now=now,
        )
        return {
            "access_token": access,
            "token_type": "DPoP" if jkt else "Bearer",
            "expires_in": self._settings.access_token_ttl,
            "refresh_token": refresh_token,
        }
