"""The access-token verifier lives in the qrgate-verify package (verify/), which downstream services
install without the server; `gateway.tokens` re-exports these names for code written against it."""

from __future__ import annotations

from qrgate_verify.verifier import (
    DEFAULT_ALGORITHMS,
    MAX_TOKEN_BYTES,
    VERIFIED_CACHE_SIZE,
    AccessTokenVerifier,
    InvalidToken,
    KeySource,
    RemoteJwks,
    StaticKeys,
)

__all__ = [
    "DEFAULT_ALGORITHMS",
    "MAX_TOKEN_BYTES",
    "VERIFIED_CACHE_SIZE",
    "AccessTokenVerifier",
    "InvalidToken",
    "KeySource",
    "RemoteJwks",
    "StaticKeys",
]
