"""Scopes (RFC 6749 3.3) on a verified token, and the refusal when one is missing: 403
`insufficient_scope` with the RFC 6750 challenge (`Bearer error="insufficient_scope", scope="..."`,
or the `DPoP` scheme for a key-bound token, RFC 9449 7.1). No Starlette needed.

    check_scope(claims, "units.verify")     # raises InsufficientScope
"""

from __future__ import annotations

from qrgate_verify.claims import AccessTokenClaims
from qrgate_verify.problem import Problem


class InsufficientScope(Problem):
    status = 403
    code = "insufficient_scope"
    title = "Forbidden"


def scopes_of(claims: AccessTokenClaims) -> frozenset[str]:
    """The token's scopes (its space-separated `scope` claim); none when it has no such claim."""
    scope = claims.get("scope")
    return frozenset(scope.split()) if isinstance(scope, str) else frozenset()


def check_scope(claims: AccessTokenClaims, *needed: str) -> None:
    """Raise InsufficientScope unless the token carries every scope in `needed`."""
    missing = [scope for scope in needed if scope not in scopes_of(claims)]
    if not missing:
        return
    scheme = "DPoP" if claims.get("cnf", {}).get("jkt") else "Bearer"
    wanted = " ".join(needed)
    raise InsufficientScope(
        f"This access token does not allow this: it needs the scope {' '.join(missing)}.",
        headers={"WWW-Authenticate": f'{scheme} error="insufficient_scope", scope="{wanted}"'},
        scope=wanted,
    )
