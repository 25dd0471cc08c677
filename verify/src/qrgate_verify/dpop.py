"""DPoP (RFC 9449): proof-of-possession for tokens bound to the client's key.

A DPoP proof is a JWT signed by the client's key, with the public key in its header, that names the
request it goes with (`htm`, `htu`), when it was made (`iat`), a unique `jti`, and, with an access
token, that token's hash (`ath`). A token bound to a key (`cnf.jkt`) is worthless without proofs
signed by that key, so a relayed QR code or a stolen token gains an attacker nothing.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from typing import Any, Protocol

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from qrgate_verify.problem import Problem
from qrgate_verify.verifier import InvalidToken, unverified_header

PROOF_ALGORITHMS = ("ES256", "EdDSA", "Ed25519")
MAX_PROOF_BYTES = 4096


class InvalidProof(Exception):
    """The DPoP proof is missing, malformed, for another request, stale, replayed or by another key."""


def single_proof(values: Sequence[str]) -> str | None:
    """The request's DPoP proof from its `DPoP` header values (RFC 9449 4.3: at most one header);
    None without one. Several: 400 `invalid_dpop_proof`, whatever they hold."""
    if len(values) > 1:
        raise Problem(
            "Send exactly one DPoP header: this request has several.",
            code="invalid_dpop_proof",
            error="invalid_dpop_proof",
        )
    return values[0] if values else None


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK."""
    key = ECKey.import_key(jwk) if jwk.get("kty") == "EC" else OKPKey.import_key(jwk)
    return str(key.thumbprint())


def access_token_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def normalise_htu(url: str) -> str:
    """Compare URLs without query and fragment (RFC 9449 section 4.3)."""
    return url.split("#", 1)[0].split("?", 1)[0]


class ReplayCache(Protocol):
    async def first_use(self, key: str, ttl: int) -> bool: ...


class MemoryReplayCache:
    """Replay cache for one process (bounded: expired entries are dropped as it grows). Several
    replicas of a service each keep their own; the gateway shares one in its state store."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: dict[str, float] = {}
        self._capacity = capacity

    async def first_use(self, key: str, ttl: int) -> bool:
        now = time.monotonic()
        if len(self._seen) >= self._capacity:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
        if self._seen.get(key, 0.0) > now:
            return False
        self._seen[key] = now + ttl
        return True


class DpopVerifier:
    def __init__(self, replay: ReplayCache, *, max_age: int = 60, leeway: int = 5) -> None:
        self._replay = replay
        self._max_age = max_age
        self._leeway = leeway

    async def verify(
        self, proof: str | None, *, method: str, url: str, jkt: str, access_token: str | None = None
    ) -> None:
        """Raise InvalidProof unless `proof` is a fresh, unreplayed proof by the key `jkt` for this request."""
        if not proof or len(proof) > MAX_PROOF_BYTES or proof.count(".") != 2:
            raise InvalidProof("a DPoP proof is required")
        try:
            header = unverified_header(proof)
        except InvalidToken as exc:
            raise InvalidProof("malformed DPoP proof") from exc
        if header.get("typ") != "dpop+jwt" or header.get("alg") not in PROOF_ALGORITHMS:
            raise InvalidProof("DPoP proof must be typ dpop+jwt with an allowed algorithm")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or "d" in jwk:
            raise InvalidProof("DPoP proof must carry a public jwk")
        try:
            key = ECKey.import_key(jwk) if jwk.get("kty") == "EC" else OKPKey.import_key(jwk)
            claims: dict[str, Any] = jwt.decode(proof, key, algorithms=[header["alg"]]).claims
        except (JoseError, ValueError, KeyError) as exc:
            raise InvalidProof("DPoP proof signature is not valid") from exc
        if str(key.thumbprint()) != jkt:
            raise InvalidProof("DPoP proof is signed by another key than the token is bound to")
        if claims.get("htm") != method or normalise_htu(str(claims.get("htu", ""))) != normalise_htu(url):
            raise InvalidProof("DPoP proof is for another request")
        iat = claims.get("iat")
        now = time.time()
        if not isinstance(iat, int | float) or not now - self._max_age <= iat <= now + self._leeway:
            raise InvalidProof("DPoP proof is too old or from the future")
        if access_token is not None and claims.get("ath") != access_token_hash(access_token):
            raise InvalidProof("DPoP proof does not name this access token")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
            raise InvalidProof("DPoP proof needs a jti")
        digest = hashlib.sha256(f"{jkt}:{jti}".encode()).hexdigest()
        if not await self._replay.first_use(digest, self._max_age + self._leeway):
            raise InvalidProof("DPoP proof was replayed")
