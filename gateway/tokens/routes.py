"""Discovery: the public JWKS and the OpenID Provider metadata."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.jsonutil import dumps
from gateway.settings import Settings
from gateway.tokens.issuer import TokenIssuer


def routes(settings: Settings, issuer: TokenIssuer) -> list[BaseRoute]:
    async def jwks(request: Request) -> Response:
        return Response(
            dumps(issuer.ring.public_jwks()),
            media_type="application/jwk-set+json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    async def openid_configuration(request: Request) -> Response:
        document = discovery(settings.issuer, sorted({key.alg for key in issuer.ring.keys}))
        return Response(
            dumps(document), media_type="application/json", headers={"Cache-Control": "public, max-age=300"}
        )

    return [
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    ]


def discovery(base: str, algs: list[str]) -> dict[str, object]:
    """The OpenID Provider metadata: exactly what is supported."""
    return {
        "issuer": base,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "token_endpoint": f"{base}/v1/token",
        "revocation_endpoint": f"{base}/v1/revoke",
        "introspection_endpoint": f"{base}/v1/introspect",
        # People log in through the password and QR APIs, not through an authorization endpoint.
        "grant_types_supported": ["refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"],
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "jti",
            "client_id",
            "sid",
            "amr",
            "auth_time",
            "cnf",
        ],
    }
