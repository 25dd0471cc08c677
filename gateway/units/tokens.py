"""Unit tokens: short-lived JWTs from the units issuer (`{public_url}/units`), signed with the units
service's own keys (a key file of its own, rotated like the gateway's, published at
`/units/.well-known/jwks.json`).

Header `typ: unit+jwt`. Claims: `iss, sub, aud, exp, iat, jti, client_id, sid, auth_time` copied from
the gateway session that verified the unit (`sub` and `sid` are the gateway's), `unit: {tin, role, via}`,
and `cnf` when the gateway token was DPoP-bound (the unit token is bound to the same key). A legacy login
has no person: `sub` is `unit:<tin>`, `sid` is a fresh id, `unit.role` is `unit` and `legacy` is true.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, NotRequired, TypedDict, cast

from gateway.settings import Settings
from gateway.tokens import jws
from gateway.tokens.claims import Confirmation
from gateway.tokens.keys import KeyFile
from gateway.units.rules import LEGACY_ROLE, UnitRole, Via
from qrgate_verify.verifier import AccessTokenVerifier, InvalidToken, StaticKeys

UNIT_TOKEN_TYPE = "unit+jwt"  # noqa: S105 (a media type)
UNITS_PATH = "/units"


class UnitClaim(TypedDict):
    tin: str
    role: str
    via: str


class UnitTokenClaims(TypedDict):
    iss: str
    sub: str
    aud: str
    exp: int
    iat: int
    jti: str
    client_id: str
    sid: str
    auth_time: int
    unit: UnitClaim
    cnf: NotRequired[Confirmation]
    legacy: NotRequired[bool]


class UnitTokenResponse(TypedDict):
    unit_token: str
    token_type: str
    expires_in: int
    unit: UnitClaim


def units_issuer(settings: Settings) -> str:
    return settings.issuer + UNITS_PATH


class UnitTokens:
    def __init__(self, settings: Settings, keys: KeyFile) -> None:
        self._settings = settings
        self.keys = keys
        self.issuer = units_issuer(settings)
        self._verifier = AccessTokenVerifier(
            StaticKeys(lambda: keys.ring.verification_keys),
            issuer=self.issuer,
            audience=settings.units_token_audience,
            typ=UNIT_TOKEN_TYPE,
        )

    def issue(
        self,
        *,
        subject: str,
        session_id: str,
        client_id: str,
        auth_time: int,
        unit: UnitClaim,
        jkt: str | None = None,
        legacy: bool = False,
    ) -> UnitTokenResponse:
        now = int(time.time())
        ttl = self._settings.units_token_ttl
        claims: UnitTokenClaims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self._settings.units_token_audience,
            "exp": now + ttl,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "client_id": client_id,
            "sid": session_id,
            "auth_time": auth_time,
            "unit": unit,
        }
        if jkt:
            claims["cnf"] = {"jkt": jkt}
        if legacy:
            claims["legacy"] = True
        key = self.keys.ring.signing_key(now)
        header = {"alg": key.alg, "typ": UNIT_TOKEN_TYPE, "kid": key.kid}
        token = jws.sign(header, claims, key)
        return {"unit_token": token, "token_type": "DPoP" if jkt else "Bearer", "expires_in": ttl, "unit": unit}

    async def verify(self, token: str) -> UnitTokenClaims:
        """A unit token this service issued and that has not expired (raises InvalidToken)."""
        claims: dict[str, Any] = dict(await self._verifier.verify(token))
        unit = claims.get("unit")
        if not isinstance(unit, dict) or not all(isinstance(unit.get(name), str) for name in ("tin", "role", "via")):
            raise InvalidToken("token names no unit")
        if unit["via"] not in set(Via) or unit["role"] not in {*UnitRole, LEGACY_ROLE}:
            raise InvalidToken("token names no unit")
        if not isinstance(claims.get("auth_time"), int):
            raise InvalidToken("token lacks auth_time")
        return cast(UnitTokenClaims, claims)
