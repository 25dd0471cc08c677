"""Verify gateway access tokens (and unit tokens): the small verifier downstream services use, and the gateway too.

    verifier = AccessTokenVerifier(RemoteJwks("https://login.example/.well-known/jwks.json"),
                                   issuer="https://login.example", audience="qrgate-sso")
    claims = await verifier.verify(token)      # raises InvalidToken

Only allow-listed asymmetric algorithms are accepted (never `none`, never HS*), the header must say
`typ: at+jwt` (or the `typ` given, e.g. `unit+jwt`) and name a `kid` the key source knows; `iss`,
`aud`, `exp`, `nbf` and `iat` are checked with a small leeway.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol, cast

import httpx
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
    MissingCritHeaderError,
    UnsupportedHeaderError,
)
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from qrgate_verify.claims import AccessTokenClaims

DEFAULT_ALGORITHMS = ("ES256", "EdDSA")
_ASYMMETRIC = {"ES256", "ES384", "ES512", "EdDSA", "Ed25519", "RS256", "PS256"}
MAX_TOKEN_BYTES = 8192
VERIFIED_CACHE_SIZE = 10_000


class InvalidToken(Exception):
    """The token is not one this verifier trusts; the message says why (safe to log)."""


class KeySource(Protocol):
    async def keys(self, *, refresh_for_kid: str | None = None) -> KeySet: ...


class StaticKeys:
    """Keys known in-process (the gateway verifying its own tokens)."""

    def __init__(self, provider: Callable[[], KeySet]) -> None:
        self._provider = provider

    async def keys(self, *, refresh_for_kid: str | None = None) -> KeySet:
        return self._provider()


class RemoteJwks:
    """A JWKS fetched over HTTP, cached, and fetched again when a token names an unknown `kid`
    (at most once per `cooldown` seconds, so junk tokens cannot make us hammer the issuer)."""

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        max_age: float = 300.0,
        cooldown: float = 10.0,
    ) -> None:
        self.url = url
        self._client = client or httpx.AsyncClient(timeout=5.0)
        self._owns_client = client is None
        self._max_age = max_age
        self._cooldown = cooldown
        self._keyset: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def keys(self, *, refresh_for_kid: str | None = None) -> KeySet:
        now = time.monotonic()
        stale = self._keyset is None or now - self._fetched_at > self._max_age
        wants_refresh = refresh_for_kid is not None and now - self._fetched_at > self._cooldown
        if stale or wants_refresh:
            async with self._lock:
                if self._keyset is None or time.monotonic() - self._fetched_at > min(self._cooldown, self._max_age):
                    await self._fetch()
        assert self._keyset is not None
        return self._keyset

    async def _fetch(self) -> None:
        try:
            response = await self._client.get(self.url)
            response.raise_for_status()
            self._keyset = KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            # Keep serving the keys we have: a JWKS outage must not turn valid tokens away.
            if self._keyset is None:
                raise InvalidToken(f"cannot fetch the issuer's keys from {self.url}") from exc
        self._fetched_at = time.monotonic()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


# The JOSE library's refusals in our own words: a problem's detail never names a library class.
def rejection_reason(exc: Exception) -> str:
    if isinstance(exc, ExpiredTokenError):
        return "token has expired"
    if isinstance(exc, MissingClaimError):
        return f"token lacks the claim {exc.claim}"
    if isinstance(exc, ClaimError):
        claim = getattr(exc, "claim", "")
        return f"the token's {claim} claim is not acceptable" if claim else "a claim of the token is not acceptable"
    if isinstance(exc, BadSignatureError):
        return "token signature is not valid"
    if isinstance(exc, MissingCritHeaderError | UnsupportedHeaderError):
        return "token header has a parameter this verifier does not support"
    return "token is not valid"


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS, not yet verified (to pick the key and check `alg`/`typ`)."""
    segment = token.split(".", 1)[0]
    # JSONDecodeError and UnicodeDecodeError are ValueErrors; the stdlib parser raises RecursionError
    # on deeply nested input (orjson, which the gateway used before, stops at depth 1024 by itself).
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    return header


def _kid_of(keyset: KeySet) -> set[str]:
    return {str(key.kid) for key in keyset.keys}


class AccessTokenVerifier:
    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
        leeway: int = 30,
        typ: str = "at+jwt",
        remember: int = VERIFIED_CACHE_SIZE,
    ) -> None:
        unsafe = set(algorithms) - _ASYMMETRIC
        if unsafe:
            raise ValueError(f"refusing non-asymmetric algorithms {sorted(unsafe)}")
        self._keys = keys
        self._algorithms = list(algorithms)
        self._typ = typ
        self._audience = audience
        self._leeway = leeway
        # Tokens whose signature and claims were checked, until they expire: a phone presents the
        # same token to scan and to confirm, a service sees the same token many times.
        self._verified: dict[str, AccessTokenClaims] = {}
        self._remember = remember
        self._registry = JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            exp={"essential": True},
            sub={"essential": True},
            iat={"essential": True},
        )

    async def verify(self, token: str, *, audiences: Collection[str] | None = None) -> AccessTokenClaims:
        """The token's claims, if it is valid for `audiences` (default: the verifier's audience)."""
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise InvalidToken("malformed token")
        cached = self._verified.get(token)
        if cached is not None and time.time() < cached["exp"] + self._leeway:
            return self._for_audience(cached, audiences)
        claims = await self._verify_signed(token)
        if self._remember:
            if len(self._verified) >= self._remember:
                self._verified.clear()
            self._verified[token] = claims
        return self._for_audience(claims, audiences)

    def _for_audience(self, claims: AccessTokenClaims, audiences: Collection[str] | None) -> AccessTokenClaims:
        aud = claims["aud"]
        token_audiences = {aud} if isinstance(aud, str) else set(aud)
        if not token_audiences & set(audiences or (self._audience,)):
            raise InvalidToken("token is for another audience")
        return claims

    async def _verify_signed(self, token: str) -> AccessTokenClaims:
        header = unverified_header(token)
        if header.get("alg") not in self._algorithms:
            raise InvalidToken("algorithm not allowed")
        if header.get("typ") != self._typ:
            raise InvalidToken(f"token type must be {self._typ}")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("token names no key")
        keyset = await self._keys.keys()
        if kid not in _kid_of(keyset):
            keyset = await self._keys.keys(refresh_for_kid=kid)
            if kid not in _kid_of(keyset):
                raise InvalidToken("token signed by an unknown key")
        try:
            decoded = jwt.decode(token, keyset, algorithms=self._algorithms)
            self._registry.validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise InvalidToken(rejection_reason(exc)) from exc
        claims: dict[str, Any] = decoded.claims
        aud = claims.get("aud")
        if not (isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))):
            raise InvalidToken("token names no audience")
        for name in ("sid", "client_id"):
            if not isinstance(claims.get(name), str):
                raise InvalidToken(f"token lacks {name}")
        return cast(AccessTokenClaims, claims)
