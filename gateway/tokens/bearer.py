"""Authenticate a request to the gateway by its access token: signature and claims, the session
still alive (logout and reuse detection take effect at once here), and for a DPoP-bound token a
proof by the bound key."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway import errors
from gateway.inputs import bearer_token
from gateway.tokens.claims import AccessTokenClaims
from gateway.tokens.dpop import DpopVerifier, InvalidProof, single_proof
from gateway.tokens.sessions import SessionManager
from qrgate_verify.verifier import AccessTokenVerifier, InvalidToken


@dataclass(frozen=True, slots=True)
class Caller:
    claims: AccessTokenClaims
    session: dict[str, str]  # the live session record, as read for this request


@dataclass(frozen=True, slots=True)
class BearerAuth:
    """What every handler that serves a person calls first."""

    verifier: AccessTokenVerifier
    sessions: SessionManager
    dpop: DpopVerifier
    issuer: str  # the public base URL, for the DPoP proof's `htu`

    async def claims(self, request: Request) -> AccessTokenClaims:
        return (await self.caller(request)).claims

    async def caller(self, request: Request) -> Caller:
        token = bearer_token(request)
        proof = single_proof(request.headers.getlist("dpop"))  # two DPoP headers: 400
        try:
            claims = await self.verifier.verify(token)
        except InvalidToken as exc:
            raise errors.Unauthorized(f"The access token is not valid: {exc}.", code="invalid_token") from exc
        session = await self.sessions.alive(claims["sid"])
        if session is None:
            raise errors.Unauthorized("The session of this access token has ended.", code="session_ended")
        jkt = claims.get("cnf", {}).get("jkt")
        scheme = request.headers.get("authorization", "").split(" ", 1)[0].lower()
        if not jkt and scheme == "dpop":  # the DPoP scheme claims a binding the token does not have
            raise errors.Unauthorized(
                "This access token is not bound to a key: send it with the Bearer scheme.", code="invalid_token"
            )
        if jkt:
            url = self.issuer + request.url.path
            try:
                if scheme != "dpop":
                    raise InvalidProof("a DPoP-bound token must be sent with the DPoP scheme")
                await self.dpop.verify(proof, method=request.method, url=url, jkt=jkt, access_token=token)
            except InvalidProof as exc:
                raise errors.Unauthorized(
                    f"DPoP proof refused: {exc}.", code="invalid_dpop_proof", headers={"WWW-Authenticate": "DPoP"}
                ) from exc
        return Caller(claims, session)
