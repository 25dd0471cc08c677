"""RFC 7523 client assertions (`private_key_jwt`, OpenID Connect Core 9): one check for every client
that authenticates with a key, the gateway's confidential services (settings) and the relying parties
(gateway/oidc/client_keys.py finds their keys).

An assertion is usable for at most `MAX_LIFETIME` seconds: until its `exp`, or until `iat` +
`MAX_LIFETIME` when `exp` is farther (client libraries differ: openid-client signs for 60 s, Authlib
for an hour), and one without `iat` may not expire later than `MAX_LIFETIME` from now. Its `jti` is
counted in the state store (one atomic INCR) until that moment, so it is used once, by any process;
after that moment it is refused anyway. Keys are chosen by `kid`, or, without one, as the single key of
the JWKS that fits the algorithm; `alg` must be on the allow-list (never `none` nor an HMAC, so a
public key cannot be used as a shared secret).
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Iterable
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from gateway import errors
from gateway.jsonutil import loads
from gateway.state import keys
from gateway.state.base import StateStore
from qrgate_verify.verifier import InvalidToken, unverified_header

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# alg -> (key type, curve): what may sign an assertion ("Ed25519" is RFC 9864's name for EdDSA on it).
KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
    "Ed25519": ("OKP", "Ed25519"),
}
ASSERTION_ALGORITHMS = list(KEY_TYPES)
MAX_ASSERTION = 8192  # characters
MAX_LIFETIME = 300  # s an assertion may be used for
LEEWAY = 30  # s of clock difference tolerated
MIN_RSA_BITS = 2048


class InvalidClient(errors.Unauthorized):
    code = "invalid_client"


def refuse(detail: str) -> InvalidClient:
    return InvalidClient(detail, error="invalid_client", headers={"WWW-Authenticate": 'Basic realm="qrgate"'})


def claimed_client(assertion: str) -> tuple[str, dict[str, Any]]:
    """The client an assertion says it comes from (its `iss`, not verified yet) and its header."""
    if len(assertion) > MAX_ASSERTION:
        raise refuse("The client assertion is too large.")
    try:
        header = unverified_header(assertion)
        payload = assertion.split(".")[1]
        claims = loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        issuer = claims.get("iss") if isinstance(claims, dict) else None
    except (InvalidToken, ValueError, IndexError, TypeError) as exc:
        raise refuse("The client assertion is malformed.") from exc
    if not isinstance(issuer, str) or not issuer:
        raise refuse("The client assertion has no iss (the client id).")
    return issuer, header


def fits(key: Key, alg: str) -> bool:
    """Whether `key` may verify an `alg` signature: its type and curve, its own `alg` and `use`."""
    kty, crv = KEY_TYPES[alg]
    if key.key_type != kty or key.get("use", "sig") != "sig" or key.get("alg", alg) != alg:
        return False
    return crv is None or key.get("crv") == crv


def check_key_set(jwks: object) -> KeySet:
    """A JWKS a client registers: public signing keys of the allowed types only (a private key is
    refused: the gateway must never hold it), RSA of 2048 bits or more, at most 20 keys."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not 1 <= len(jwks["keys"]) <= 20:
        raise ValueError("a JWKS is an object with 1-20 keys")
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict):
            raise ValueError("every key is a JSON object")
        if any(name in jwk for name in ("d", "p", "q", "k")):
            raise ValueError("the JWKS holds a private or secret key: register the public keys only")
        if (jwk.get("kty"), jwk.get("crv")) not in {("EC", "P-256"), ("RSA", None), ("OKP", "Ed25519")}:
            raise ValueError(f"key type {jwk.get('kty')} {jwk.get('crv', '')} is not one of EC P-256, RSA, Ed25519")
        if jwk["kty"] == "RSA" and _bits(jwk.get("n")) < MIN_RSA_BITS:  # checked before joserfc sees it
            raise ValueError(f"RSA keys have at least {MIN_RSA_BITS} bits")
    try:
        key_set = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"the JWKS does not parse: {exc}") from exc
    return key_set


def _bits(modulus: object) -> int:
    if not isinstance(modulus, str):
        return 0
    try:
        return int.from_bytes(base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4)), "big").bit_length()
    except ValueError:
        return 0


def pick_key(key_set: KeySet, header: dict[str, Any]) -> Key:
    alg = header.get("alg")
    if alg not in KEY_TYPES:
        raise refuse(f"The client assertion's alg must be one of {', '.join(ASSERTION_ALGORITHMS)}.")
    kid = header.get("kid")
    candidates = [key for key in key_set.keys if fits(key, alg)]
    if kid is not None:
        candidates = [key for key in candidates if key.kid == kid]
        if not candidates:
            raise refuse(f"The client's JWKS has no {alg} key with kid {str(kid)[:64]!r}.")
    elif len(candidates) != 1:
        raise refuse(f"The client's JWKS has {len(candidates)} {alg} keys: the assertion must name one by kid.")
    return candidates[0]


class ClientAssertions:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    async def verify(
        self, assertion: str, *, client_id: str, key_set: KeySet, header: dict[str, Any], audiences: Iterable[str]
    ) -> None:
        """Raise InvalidClient unless `assertion` is `client_id`'s, signed by a key of `key_set`, for
        one of `audiences`, current, and never seen before."""
        key = pick_key(key_set, header)
        try:
            claims = jwt.decode(assertion, key, algorithms=[header["alg"]]).claims
        except (JoseError, ValueError, TypeError) as exc:
            raise refuse("The client assertion's signature does not verify with the client's key.") from exc
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise refuse("The client assertion's iss and sub must both be the client id.")
        audience = claims.get("aud")
        named = {a for a in (audience if isinstance(audience, list) else [audience]) if isinstance(a, str)}
        if not named & set(audiences):
            raise refuse("The client assertion's aud must be the token endpoint or the issuer.")
        now = time.time()
        until = _usable_until(claims, now)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
            raise refuse("The client assertion needs a jti (a unique id, used once).")
        digest = hashlib.sha256(jti.encode()).hexdigest()
        ttl = max(1, math.ceil(until - now + LEEWAY))
        if await self._store.hit(keys.key(keys.Space.CLIENT_ASSERTION, client_id, digest), ttl) > 1:
            raise refuse("The client assertion was used before (its jti): sign a new one for every request.")


def _usable_until(claims: dict[str, Any], now: float) -> float:
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    for name, value in (("exp", exp), ("iat", iat), ("nbf", nbf)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise refuse(f"The client assertion's {name} must be a number (seconds since 1970).")
    if exp is None:
        raise refuse("The client assertion needs exp.")
    if (iat is not None and iat > now + LEEWAY) or (nbf is not None and nbf > now + LEEWAY):
        raise refuse("The client assertion is not valid yet (iat or nbf in the future).")
    until = float(exp) if iat is None else min(float(exp), float(iat) + MAX_LIFETIME)
    if until <= now - LEEWAY:
        raise refuse("The client assertion has expired.")
    if until > now + MAX_LIFETIME + LEEWAY:
        raise refuse(f"The client assertion's exp is too far ahead (at most {MAX_LIFETIME} s, or give iat).")
    return until
