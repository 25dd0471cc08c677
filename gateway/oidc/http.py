"""HTTP adapter of the OpenID Connect provider: `/authorize` (GET and POST), `/par`, `/userinfo`
(GET and POST) and the discovery document. The sign-in page is `oidc/signin.py`, logout
`oidc/logout.py`; the authorization_code grant joins the token endpoint (`token_grant`)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, unquote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.inputs import read_form
from gateway.jsonutil import dumps
from gateway.oidc.provider import OAuthError, OidcProvider, Redirect
from gateway.oidc.requests import RefusedHere, RefusedToClient, single
from gateway.tokens.assertions import ASSERTION_ALGORITHMS
from gateway.tokens.bearer import BearerAuth
from gateway.tokens.dpop import DpopVerifier, InvalidProof, single_proof, thumbprint
from gateway.tokens.verifier import InvalidToken
from gateway.web.pages import page_headers, render
from qrgate_verify.verifier import unverified_header

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_QUERY = 8192


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """RFC 6749 2.3.1: `Authorization: Basic` with the form-urlencoded id and secret."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "Malformed Basic credentials.", status=401) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise OAuthError("invalid_client", "Malformed Basic credentials.", status=401)
    return unquote(client_id), unquote(secret)


def proof_key(proof: str) -> str:
    """The thumbprint of the key a DPoP proof names (its signature is checked by `verify` next)."""
    try:
        jwk = unverified_header(proof).get("jwk")
        if not isinstance(jwk, dict) or "d" in jwk:
            raise InvalidProof("DPoP proof must carry a public jwk")
        return thumbprint(jwk)
    except (InvalidToken, ValueError, KeyError, TypeError) as exc:
        raise InvalidProof("malformed DPoP proof") from exc


def error_page(refused: RefusedHere, request: Request) -> Response:
    """Shown where a redirect would be unsafe: an unknown client or redirect URI, a bad request_uri."""
    body = render(
        "oidc-error.html",
        error=refused.error,
        description=refused.description,
    )
    return HTMLResponse(body, status_code=400, headers={**page_headers(request), **NO_STORE})


def redirect(target: Redirect, provider: OidcProvider, *, status: int = 302) -> Response:
    return with_cookies(RedirectResponse(target.url, status_code=status, headers=NO_STORE), target, provider)


def with_cookies(response: Response, target: Redirect, provider: OidcProvider) -> Response:
    """`response` setting (or deleting) the cookies `target` names: HttpOnly, SameSite=Lax, Path=/."""
    for name, value in target.cookies.items():
        if value:
            response.set_cookie(name, value, httponly=True, secure=provider.secure_cookies, samesite="lax", path="/")
        else:
            response.delete_cookie(name, httponly=True, secure=provider.secure_cookies, samesite="lax", path="/")
    return response


async def authorization_params(request: Request) -> dict[str, str]:
    post = request.method == "POST"
    raw = (await request.body()).decode("utf-8", errors="replace") if post else request.url.query
    if len(raw) > MAX_QUERY:
        raise RefusedHere("The authorization request is too long.")
    return single(parse_qs(raw, keep_blank_values=True))


def routes(provider: OidcProvider, bearer: BearerAuth, dpop: DpopVerifier) -> list[BaseRoute]:
    async def authorize(request: Request) -> Response:
        try:
            params = await authorization_params(request)
            target = await provider.authorize(params, session_cookie=request.cookies.get(provider.session_cookie))
        except RefusedHere as refused:
            return error_page(refused, request)
        except RefusedToClient as refused:
            return RedirectResponse(provider.refused_url(refused), status_code=302, headers=NO_STORE)
        return redirect(target, provider, status=302 if "code=" in target.url else 303)

    async def par(request: Request) -> Response:
        form = await read_form(request)
        party = await provider.client_of(form, basic_credentials(request), endpoint="/par")
        if party is None:
            raise OAuthError("invalid_client", "Unknown client.", status=401)
        for name in ("client_secret", "client_assertion", "client_assertion_type"):
            form.pop(name, None)
        pushed = await provider.push(form, party)
        return Response(dumps(pushed), status_code=201, media_type="application/json", headers=NO_STORE)

    async def userinfo(request: Request) -> Response:
        claims = await bearer.claims(request)
        body = await provider.userinfo(claims["sub"], str(claims.get("scope", "")), claims.get("unit"))
        return Response(dumps(body), media_type="application/json", headers=NO_STORE)

    async def configuration(request: Request) -> Response:
        algs = sorted({key.alg for key in provider.ring.keys})
        return JSONResponse(discovery(provider.settings.issuer, algs), headers={"Cache-Control": "public, max-age=300"})

    return [
        Route("/authorize", authorize, methods=["GET", "POST"]),
        Route("/par", par, methods=["POST"]),
        Route("/userinfo", userinfo, methods=["GET", "POST"]),
        Route("/.well-known/openid-configuration", configuration, methods=["GET"]),
    ]


def token_grant(provider: OidcProvider, dpop: DpopVerifier) -> Callable[[Request, dict[str, str]], Awaitable[Response]]:
    """`grant_type=authorization_code` at `POST /v1/token`."""

    async def grant(request: Request, form: dict[str, str]) -> Response:
        party = await provider.client_of(form, basic_credentials(request))
        if party is None:
            raise OAuthError("invalid_client", "Unknown client.", status=401)
        jkt = None
        proof = single_proof(request.headers.getlist("dpop"))
        if proof is not None:
            try:
                jkt = proof_key(proof)
                await dpop.verify(proof, method="POST", url=provider.settings.issuer + "/v1/token", jkt=jkt)
            except InvalidProof as exc:
                raise OAuthError("invalid_dpop_proof", str(exc)) from exc
        answer = await provider.exchange_code(form, party, jkt=jkt)
        return Response(dumps(answer), media_type="application/json", headers=NO_STORE)

    return grant


SCOPES_SUPPORTED = ["openid", "profile", "phone", "offline_access", "unit"]
CLAIMS_SUPPORTED = [  # of id_tokens and UserInfo, and of the access tokens (RFC 9068) downstream services read
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "azp",
    "sid",
    "at_hash",
    "name",
    "preferred_username",
    "phone_number",
    "phone_number_verified",
    "unit",
    "jti",
    "client_id",
    "cnf",
    "scope",
]


def discovery(base: str, algs: list[str]) -> dict[str, object]:
    """OpenID Provider metadata (Discovery 1.0 3, RFC 8414): exactly what is supported."""
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/authorize",
        "pushed_authorization_request_endpoint": f"{base}/par",
        "token_endpoint": f"{base}/v1/token",
        "userinfo_endpoint": f"{base}/userinfo",
        "end_session_endpoint": f"{base}/logout",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "revocation_endpoint": f"{base}/v1/revoke",
        "introspection_endpoint": f"{base}/v1/introspect",
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        # private_key_jwt: relying parties registered with keys, and the gateway's confidential services
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "claims_supported": CLAIMS_SUPPORTED,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": True,
        "require_pushed_authorization_requests": False,
        "acr_values_supported": ["urn:qrgate:acr:app-confirmed", "urn:qrgate:acr:password"],
        "ui_locales_supported": ["zh-CN", "en"],
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "authorization_response_iss_parameter_supported": True,
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
    }


def refreshing_client(provider: OidcProvider) -> Callable[[Request, dict[str, str]], Awaitable[str | None]]:
    """A relying party refreshing or revoking authenticates as it registered (a confidential one with
    its secret or its key)."""

    own_clients = set(provider.settings.client_policies())  # the gateway's own, which name themselves

    async def authenticated(request: Request, form: dict[str, str]) -> str | None:
        party = await provider.client_of(form, basic_credentials(request), endpoint=request.url.path)
        named = form.get("client_id", "") if form.get("grant_type") == "refresh_token" else ""
        if party is None and named and named not in own_clients:
            # Not the gateway's, and no relying party (any more): a removed party's refresh tokens die here
            # even where the removal could not end its sessions (the memory store of another process).
            raise OAuthError("invalid_client", "Unknown client.", status=401)
        return party.client_id if party is not None else None

    return authenticated
