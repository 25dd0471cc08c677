"""OAuth endpoints: token (refresh, token exchange), revoke, introspect; logout and session lists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, metrics
from gateway.inputs import read_form
from gateway.jsonutil import dumps
from gateway.settings import Settings
from gateway.tokens.bearer import BearerAuth
from gateway.tokens.client_auth import ClientAuthenticator, refuse
from gateway.tokens.dpop import DpopVerifier, InvalidProof, single_proof
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.sessions import SessionManager
from qrgate_verify.scopes import check_scope, scopes_of
from qrgate_verify.verifier import AccessTokenVerifier, InvalidToken

# The person's devices (GET /v1/sessions, DELETE /v1/sessions/{sid}): first-party apps' tokens carry it
# (QRGATE_CLIENT_SCOPES); a relying party's never does, so it cannot see or end the person's other sessions.
SESSIONS_SCOPE = "sessions"

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 (a URN)
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 (a URN)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _json(body: object, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=NO_STORE)


_ERROR_CLASS: dict[int, type[errors.GatewayError]] = {401: errors.Unauthorized, 403: errors.Forbidden}


def _oauth_error(error: str, detail: str, *, status: int = 400, code: str | None = None) -> errors.GatewayError:
    """A problem that is also an RFC 6749 error response (`error` beside our `code`)."""
    kind = _ERROR_CLASS.get(status, errors.BadRequest)
    return kind(detail, code=code or error, status=status, error=error)


Grant = Callable[[Request, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class TokenEndpoints:
    settings: Settings
    sessions: SessionManager
    issuer: TokenIssuer
    verifier: AccessTokenVerifier
    dpop: DpopVerifier
    client_auth: ClientAuthenticator
    bearer: BearerAuth
    audiences: frozenset[str]
    # Grants other packages add (the OpenID provider's authorization_code), by grant_type.
    grants: Mapping[str, Grant] = field(default_factory=dict)
    # Who refreshes (or revokes), when that client must authenticate (a confidential relying party): its
    # client id, or None for the gateway's own public clients, which name themselves.
    refreshing_client: Callable[[Request, dict[str, str]], Awaitable[str | None]] | None = None

    async def token(self, request: Request) -> Response:
        form = await read_form(request)
        grant = form.get("grant_type", "")
        if grant == "refresh_token":
            return await self._refresh(request, form)
        if grant == TOKEN_EXCHANGE:
            return await self._exchange(request, form)
        extra = self.grants.get(grant)
        if extra is not None:
            return await extra(request, form)
        supported = ", ".join(["refresh_token", "token exchange", *self.grants])
        raise _oauth_error("unsupported_grant_type", f"grant_type must be one of: {supported}.")

    async def _refresh(self, request: Request, form: dict[str, str]) -> Response:
        refresh_token = form.get("refresh_token", "")
        authenticated = await self.refreshing_client(request, form) if self.refreshing_client else None
        client_id = authenticated or form.get("client_id", "")
        if not refresh_token or not client_id:
            raise _oauth_error("invalid_request", "refresh_token and client_id are required.")

        async def prove_key(jkt: str) -> None:
            """A DPoP-bound session refreshes only with a proof by the bound key."""
            try:
                await self.dpop.verify(
                    single_proof(request.headers.getlist("dpop")),
                    method="POST",
                    url=self._endpoint("/v1/token"),
                    jkt=jkt,
                )
            except InvalidProof as exc:
                raise _oauth_error("invalid_dpop_proof", str(exc)) from exc  # 400 at the token endpoint (RFC 9449 5)

        return _json(await self.sessions.refresh(refresh_token, client_id=client_id, prove_key=prove_key))

    def _endpoint(self, path: str) -> str:
        return self.settings.issuer + path

    async def _exchange(self, request: Request, form: dict[str, str]) -> Response:
        """RFC 8693: a person's access token -> a token for another subsystem (`audience`)."""
        service = await self.client_auth.authenticate(request, form)
        client_id = service or form.get("client_id", "")
        audience = form.get("audience", "")
        if form.get("subject_token_type") != ACCESS_TOKEN_TYPE or not form.get("subject_token"):
            raise _oauth_error("invalid_request", f"subject_token and subject_token_type={ACCESS_TOKEN_TYPE} required.")
        if form.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise _oauth_error("invalid_request", "Only access tokens can be requested.")
        policy = self.settings.exchange_audiences.get(audience)
        if policy is None:
            raise _oauth_error("invalid_target", f"Unknown audience {audience!r}.")
        if service is not None and not self.settings.confidential_clients[service].may_exchange:
            raise _oauth_error("unauthorized_client", "This client may not exchange tokens.", status=403)
        if service is None and client_id not in policy.clients:
            raise _oauth_error(
                "unauthorized_client", f"Client {client_id!r} may not get tokens for {audience}.", status=403
            )
        try:
            subject = await self.verifier.verify(form["subject_token"])
        except InvalidToken as exc:
            raise _oauth_error("invalid_grant", f"The subject token is not valid: {exc}.") from exc
        if service is None and subject["client_id"] != client_id:
            raise _oauth_error("invalid_grant", "The subject token was issued to another client.")
        if await self.sessions.alive(subject["sid"]) is None:
            raise _oauth_error("invalid_grant", "The subject token's session has ended.")
        # Exchange narrows: the audience's scopes that the subject token carries, or fewer.
        held = set(scopes_of(subject))
        available = [scope for scope in policy.scopes if scope in held]
        requested = form.get("scope", "").split() or available
        if not requested or not set(requested) <= set(available):
            raise _oauth_error(
                "invalid_scope",
                f"{audience} allows only the scopes of the subject token among: {' '.join(policy.scopes)}.",
            )
        extra: dict[str, Any] = {"scope": " ".join(requested)}
        if service is not None:
            extra["act"] = {"sub": service}
        issued = self.issuer.access_token(
            subject=subject["sub"],
            client_id=client_id,
            session_id=subject["sid"],
            amr=subject["amr"],
            auth_time=subject["auth_time"],
            audience=audience,
            jkt=subject.get("cnf", {}).get("jkt"),
            extra=extra,
        )
        metrics.labelled(metrics.TOKENS_ISSUED, "token_exchange").inc()
        return _json(
            {
                "access_token": issued,
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "DPoP" if "cnf" in subject else "Bearer",
                "expires_in": self.settings.access_token_ttl,
                "scope": extra["scope"],
            }
        )

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: revoking a refresh or access token ends its session. Always 200 for a well-formed
        request, whether or not the token was valid (nothing is revealed)."""
        form = await read_form(request)
        value = form.get("token", "")
        if not value:
            raise _oauth_error("invalid_request", "token is required.")
        if self.refreshing_client is not None and _authenticates(request, form):
            await self.refreshing_client(request, form)  # RFC 7009 2.1: a client that authenticates, does so rightly
        session = await self.sessions.peek(value)
        if session is not None:
            await self.sessions.end(session[0])
        else:
            try:
                claims = await self.verifier.verify(value)
            except InvalidToken:
                claims = None
            if claims is not None:
                await self.sessions.end(claims["sid"])
        return Response(status_code=200, headers=NO_STORE)

    async def introspect(self, request: Request) -> Response:
        """RFC 7662, for authenticated services that need to know about revocation at once."""
        form = await read_form(request)
        service = await self.client_auth.authenticate(request, form)
        if service is None:
            raise refuse("Introspection needs client authentication.")
        if not self.settings.confidential_clients[service].may_introspect:
            raise _oauth_error("unauthorized_client", "This client may not introspect.", status=403)
        value = form.get("token", "")
        inactive = _json({"active": False})
        session = await self.sessions.peek(value)
        if session is not None:
            sid, data = session
            return _json(
                {
                    "active": True,
                    "token_type": "refresh_token",
                    "sub": data["sub"],
                    "client_id": data["client_id"],
                    "sid": sid,
                    "exp": int(data["expires_at"]),
                    "iss": self.settings.issuer,
                }
            )
        try:
            claims = await self.verifier.verify(value, audiences=self.audiences)
        except InvalidToken:
            return inactive
        if await self.sessions.alive(claims["sid"]) is None:
            return inactive
        return _json({"active": True, "token_type": "access_token", **claims})

    async def logout(self, request: Request) -> Response:
        claims = await self.bearer.claims(request)
        await self.sessions.end(claims["sid"])
        return Response(status_code=204)

    async def list_sessions(self, request: Request) -> Response:
        claims = await self.bearer.claims(request)
        check_scope(claims, SESSIONS_SCOPE)
        sessions = await self.sessions.list_of(claims["sub"])
        current = await self.sessions.alive(claims["sid"])  # its masked name, kept since the login
        return _json(
            {
                "display_name": current.get("display_name", "") if current else "",
                "sessions": [
                    {
                        "sid": s.sid,
                        "client_id": s.client_id,
                        "device_name": s.device_name,
                        "amr": s.amr,
                        "created_at": s.created_at,
                        "last_used": s.last_used,
                        "current": s.sid == claims["sid"],
                    }
                    for s in sessions
                ],
            }
        )

    async def end_session(self, request: Request) -> Response:
        """Sign out one of the caller's devices (e.g. the desktop, from the phone)."""
        claims = await self.bearer.claims(request)
        check_scope(claims, SESSIONS_SCOPE)
        sid = request.path_params["sid"]
        session = await self.sessions.alive(sid)
        if session is None or session["sub"] != claims["sub"]:
            raise errors.NotFound("You have no such session.", code="session_not_found")
        await self.sessions.end(sid)
        return Response(status_code=204)


def _authenticates(request: Request, form: Mapping[str, str]) -> bool:
    """Whether the request carries client authentication (Basic, a secret or an assertion)."""
    basic = request.headers.get("authorization", "").lower().startswith("basic ")
    return basic or "client_secret" in form or "client_assertion" in form or "client_assertion_type" in form


def routes(endpoints: TokenEndpoints) -> list[BaseRoute]:
    return [
        Route("/v1/token", endpoints.token, methods=["POST"]),
        Route("/v1/revoke", endpoints.revoke, methods=["POST"]),
        Route("/v1/introspect", endpoints.introspect, methods=["POST"]),
        Route("/v1/logout", endpoints.logout, methods=["POST"]),
        Route("/v1/sessions", endpoints.list_sessions, methods=["GET"]),
        Route("/v1/sessions/{sid}", endpoints.end_session, methods=["DELETE"]),
    ]
