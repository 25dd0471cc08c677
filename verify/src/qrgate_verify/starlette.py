"""Trust gateway tokens in a Starlette (or any ASGI) service: a middleware and a dependency.
Needs the `starlette` extra (`pip install "qrgate-verify[starlette]"`); nothing else here imports it.

    verifier = AccessTokenVerifier(RemoteJwks(f"{GATEWAY}/.well-known/jwks.json"),
                                   issuer=GATEWAY, audience="qrgate-sso")
    app = Starlette(routes=..., middleware=[Middleware(TokenAuthMiddleware, verifier=verifier)],
                    exception_handlers={Problem: problem_handler})
    async def handler(request):  claims = require_claims(request)

The middleware verifies `Authorization: Bearer` (or `DPoP` with a proof, for bound tokens) on every
HTTP request outside `public_paths`, answers 401 problem+json itself, and puts the claims in
`request.state.claims`. A `Problem` raised by the key source (the gateway's 503 when the issuer's
keys cannot be fetched) is answered the same way. With `session_ends=` (a started `SessionEnds`), a
token of an ended session gets 401 `session_ended`: from the feed's view for reads, after asking the
gateway for `fresh_methods` (POST, PUT, PATCH, DELETE), which fail closed with 503
`session_status_unavailable` when the gateway cannot say and the view is too old.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from qrgate_verify.claims import AccessTokenClaims
from qrgate_verify.dpop import DpopVerifier, InvalidProof, MemoryReplayCache, single_proof
from qrgate_verify.problem import Problem, Unauthorized, problem_app, problem_json
from qrgate_verify.scopes import check_scope
from qrgate_verify.session_ends import SessionEnds
from qrgate_verify.verifier import AccessTokenVerifier, InvalidToken


class TokenAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: AccessTokenVerifier,
        public_paths: Collection[str] = (),
        public_base_url: str | None = None,
        dpop: DpopVerifier | None = None,
        session_ends: SessionEnds | None = None,
        fresh_methods: Collection[str] = ("POST", "PUT", "PATCH", "DELETE"),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.public_paths = tuple(public_paths)
        self.public_base_url = public_base_url
        self.dpop = dpop or DpopVerifier(MemoryReplayCache())
        self.session_ends = session_ends
        self.fresh_methods = frozenset(fresh_methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["path"].startswith(self.public_paths) and self.public_paths):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            claims = await self.check(request)
        except Problem as exc:
            await problem_app(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["claims"] = claims
        await self.app(scope, receive, send)

    async def check(self, request: Request) -> AccessTokenClaims:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "dpop") or not token.strip():
            raise Unauthorized("An access token is required.", code="invalid_token")
        proof = single_proof(request.headers.getlist("dpop"))
        try:
            claims = await self.verifier.verify(token.strip())
        except InvalidToken as exc:
            raise Unauthorized(f"The access token is not valid: {exc}.", code="invalid_token") from exc
        jkt = claims.get("cnf", {}).get("jkt")
        if not jkt and scheme.lower() == "dpop":
            raise Unauthorized(
                "This access token is not bound to a key: send it with the Bearer scheme.", code="invalid_token"
            )
        if jkt:
            base = self.public_base_url or str(request.base_url).rstrip("/")
            try:
                if scheme.lower() != "dpop":
                    raise InvalidProof("a DPoP-bound token must be sent with the DPoP scheme")
                await self.dpop.verify(
                    proof,
                    method=request.method,
                    url=base + request.url.path,
                    jkt=jkt,
                    access_token=token.strip(),
                )
            except InvalidProof as exc:
                raise Unauthorized(f"DPoP proof refused: {exc}.", code="invalid_dpop_proof") from exc
        if self.session_ends is not None:
            # A state-changing call asks the gateway now; others use the feed's view (no I/O).
            await self.session_ends.check(claims["sid"], fresh=request.method in self.fresh_methods)
        return claims


def require_claims(conn: HTTPConnection) -> AccessTokenClaims:
    """The verified claims the middleware attached (raises a 401 Problem if the route was left public)."""
    claims: AccessTokenClaims | None = getattr(conn.state, "claims", None)
    if claims is None:
        raise Unauthorized("An access token is required.", code="invalid_token")
    return claims


def require_scope(conn: HTTPConnection, *needed: str) -> AccessTokenClaims:
    """The verified claims, if the token carries every scope in `needed`; else 403
    `insufficient_scope` with its `WWW-Authenticate` challenge (RFC 6750 3.1)."""
    claims = require_claims(conn)
    check_scope(claims, *needed)
    return claims


async def problem_handler(request: Request, exc: Exception) -> Response:
    """For `exception_handlers={Problem: problem_handler}`: a Problem raised in a route (by
    `require_claims` on a public route, or by your own code) answers problem+json, not 500."""
    assert isinstance(exc, Problem)
    return Response(
        problem_json(exc),
        status_code=exc.status,
        headers=exc.response_headers(),
        media_type="application/problem+json",
    )
