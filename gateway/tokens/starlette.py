"""The Starlette middleware lives in the qrgate-verify package (verify/); these names stay here for
code written against `gateway.tokens`. Its refusals are `gateway.errors.Unauthorized` (the same class)."""

from __future__ import annotations

from qrgate_verify.starlette import TokenAuthMiddleware, problem_handler, require_claims

__all__ = ["TokenAuthMiddleware", "problem_handler", "require_claims"]
