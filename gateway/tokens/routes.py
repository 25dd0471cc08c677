"""The public JWKS (the OpenID Provider metadata that points at it is gateway/oidc/http.py)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.jsonutil import dumps
from gateway.tokens.issuer import TokenIssuer


def routes(issuer: TokenIssuer) -> list[BaseRoute]:
    async def jwks(request: Request) -> Response:
        return Response(
            dumps(issuer.ring.public_jwks()),
            media_type="application/jwk-set+json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    return [
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
    ]
