"""qrgate-verify: trust qrgate gateway access tokens and unit tokens in a downstream service.

    from qrgate_verify import AccessTokenVerifier, RemoteJwks
    from qrgate_verify.starlette import TokenAuthMiddleware, require_claims   # the `starlette` extra

The core (verifier, DPoP, claims, problem+json) needs joserfc, cryptography and httpx only;
`TokenAuthMiddleware`, `require_claims` and `problem_handler` are also importable from here, and
only then load Starlette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qrgate_verify.claims import AccessTokenClaims, Confirmation
from qrgate_verify.dpop import DpopVerifier, InvalidProof, MemoryReplayCache, ReplayCache
from qrgate_verify.problem import Problem, Unauthorized
from qrgate_verify.scopes import InsufficientScope, check_scope, scopes_of
from qrgate_verify.session_ends import SessionEnded, SessionEnds, SessionStatusUnavailable
from qrgate_verify.verifier import AccessTokenVerifier, InvalidToken, KeySource, RemoteJwks, StaticKeys

if TYPE_CHECKING:
    from qrgate_verify.starlette import TokenAuthMiddleware, problem_handler, require_claims, require_scope

__version__ = "0.1.0"

_STARLETTE_NAMES = {"TokenAuthMiddleware", "problem_handler", "require_claims", "require_scope"}


def __getattr__(name: str) -> Any:
    # Lazy, so that a service without Starlette can still import the verifier from the package.
    if name in _STARLETTE_NAMES:
        from qrgate_verify import starlette

        return getattr(starlette, name)
    raise AttributeError(f"module 'qrgate_verify' has no attribute {name!r}")


__all__ = [
    "AccessTokenClaims",
    "AccessTokenVerifier",
    "Confirmation",
    "DpopVerifier",
    "InsufficientScope",
    "InvalidProof",
    "InvalidToken",
    "KeySource",
    "MemoryReplayCache",
    "Problem",
    "RemoteJwks",
    "ReplayCache",
    "SessionEnded",
    "SessionEnds",
    "SessionStatusUnavailable",
    "StaticKeys",
    "TokenAuthMiddleware",
    "Unauthorized",
    "check_scope",
    "problem_handler",
    "require_claims",
    "require_scope",
    "scopes_of",
]
