"""The provider's own JWTs: id_tokens (OpenID Connect Core 1.0 2, 3.1.3.6) and back-channel logout
tokens (OpenID Connect Back-Channel Logout 1.0 2.4), signed with the gateway's current key, like
its access tokens. No personal data: `sub` is the opaque person id."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Sequence
from typing import Any

from gateway.tokens import jws
from gateway.tokens.keys import KeyRing

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# acr values: how the person authenticated for this session (docs/sso.md).
ACR_OF_AMR = {"qr": "urn:qrgate:acr:app-confirmed", "pwd": "urn:qrgate:acr:password"}


def acr_of(amr: Sequence[str]) -> str:
    return ACR_OF_AMR["qr"] if "qr" in amr else ACR_OF_AMR["pwd"]


def half_hash(value: str, alg: str) -> str:
    """`at_hash`: the left half of the hash of the ASCII value, with the hash of the JWS algorithm
    (SHA-256 for ES256, SHA-512 for EdDSA over Ed25519), BASE64URL (Core 3.1.3.6)."""
    digest = (hashlib.sha512 if alg == "EdDSA" else hashlib.sha256)(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def id_token(
    ring: KeyRing,
    *,
    issuer: str,
    subject: str,
    client_id: str,
    session_id: str,
    auth_time: int,
    amr: Sequence[str],
    nonce: str,
    access_token: str,
    ttl: int,
    extra: dict[str, Any] | None = None,
    alg: str | None = None,
    now: float | None = None,
) -> str:
    """`alg`: the relying party's registered algorithm (RS256), None for the gateway's own."""
    issued = int(time.time() if now is None else now)
    key = ring.signing_key(issued, alg)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": client_id,
        "azp": client_id,
        "exp": issued + ttl,
        "iat": issued,
        "auth_time": auth_time,
        "amr": list(amr),
        "acr": acr_of(amr),
        "sid": session_id,
        "at_hash": half_hash(access_token, key.alg),
        **(extra or {}),
    }
    if nonce:
        claims["nonce"] = nonce
    return jws.sign({"alg": key.alg, "typ": "JWT", "kid": key.kid}, claims, key)


def logout_token(ring: KeyRing, *, issuer: str, subject: str, client_id: str, session_id: str) -> str:
    """Never carries a nonce (Back-Channel Logout 2.4), and has its own `typ` (2.4, RFC 8725 3.11)."""
    issued = int(time.time())
    key = ring.signing_key(issued)
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": client_id,
        "iat": issued,
        "exp": issued + 120,
        "jti": secrets.token_urlsafe(16),
        "events": {BACKCHANNEL_EVENT: {}},
        "sid": session_id,
    }
    return jws.sign({"alg": key.alg, "typ": "logout+jwt", "kid": key.kid}, claims, key)
