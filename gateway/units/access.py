"""Trusting the gateway: its access tokens, verified against its JWKS fetched over HTTP.

There is no shared secret and no in-process shortcut: even mounted inside `qrgate serve`, the service
fetches `{gateway}/.well-known/jwks.json` over HTTP, lazily on the first request that needs it (the
server is not listening yet while it starts). `gateway.tokens.TokenAuthMiddleware` checks every
request but the public ones; the helpers here add what a route needs on top: hall staff, and a
recent login for a declaration-password reset.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import httpx
from joserfc.jwk import KeySet
from starlette.requests import HTTPConnection

from gateway import errors
from gateway.directory.persons import PersonDirectory
from gateway.rules import HALL_STAFF
from gateway.settings import Settings
from gateway.tokens.claims import AccessTokenClaims
from gateway.units.rules import UnitScope
from qrgate_verify.starlette import require_scope
from qrgate_verify.verifier import AccessTokenVerifier, InvalidToken, RemoteJwks

JWKS_PATH = "/.well-known/jwks.json"


class GatewayUnavailable(errors.ServiceUnavailable):
    code = "gateway_unavailable"


def gateway_url(settings: Settings) -> str:
    return (settings.units_gateway_url or settings.public_url).rstrip("/")


def gateway_issuer(settings: Settings) -> str:
    return (settings.units_gateway_issuer or gateway_url(settings)).rstrip("/")


class GatewayKeys:
    """The gateway's JWKS over HTTP (cached, refetched for an unknown `kid`). The HTTP client is made on
    first use, inside the serving event loop. Keys that cannot be fetched at all are a 503, not a 401:
    the caller's token may be fine."""

    def __init__(
        self, url: str, *, max_age: float, cooldown: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.url = url
        self._max_age = max_age
        self._cooldown = cooldown
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._remote: RemoteJwks | None = None

    async def keys(self, *, refresh_for_kid: str | None = None) -> KeySet:
        if self._remote is None:
            self._client = httpx.AsyncClient(timeout=5.0, follow_redirects=False, transport=self._transport)
            self._remote = RemoteJwks(self.url, client=self._client, max_age=self._max_age, cooldown=self._cooldown)
        try:
            return await self._remote.keys(refresh_for_kid=refresh_for_kid)
        except InvalidToken as exc:
            raise GatewayUnavailable("The login gateway's keys cannot be fetched; try again shortly.") from exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = self._remote = None


class GatewayTokenVerifier(AccessTokenVerifier):
    """The gateway's verifier, accepting any of several audiences (the SSO token, or one exchanged
    for the units audience)."""

    def __init__(self, keys: GatewayKeys, *, issuer: str, audiences: Collection[str]) -> None:
        accepted = tuple(a for a in audiences if a)
        if not accepted:
            raise ValueError("the units service needs at least one accepted audience")
        super().__init__(keys, issuer=issuer, audience=accepted[0])
        self.accepted = accepted

    async def verify(self, token: str, *, audiences: Collection[str] | None = None) -> AccessTokenClaims:
        return await super().verify(token, audiences=audiences or self.accepted)


# Where the mounted service reaches its own gateway in process (httpx over ASGI: no socket, no
# connection slot of the public port, no proxy): any host, the gateway's routes at the root.
IN_PROCESS_GATEWAY = "http://gateway.in-process"


def gateway_verifier(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[GatewayTokenVerifier, GatewayKeys]:
    keys = GatewayKeys(
        (IN_PROCESS_GATEWAY if transport is not None else gateway_url(settings)) + JWKS_PATH,
        max_age=settings.units_jwks_max_age,
        cooldown=settings.units_jwks_refetch_cooldown,
        transport=transport,
    )
    audiences = [a.strip() for a in settings.units_accepted_audiences.split(",")]
    return GatewayTokenVerifier(keys, issuer=gateway_issuer(settings), audiences=audiences), keys


def caller(conn: HTTPConnection, scope: UnitScope) -> AccessTokenClaims:
    """The verified gateway claims of the person calling (set by TokenAuthMiddleware), if the token
    carries `scope`; else 403 `insufficient_scope` with `WWW-Authenticate: Bearer error=
    "insufficient_scope", scope="..."` (or `DPoP ...` for a key-bound token). Every route names its
    scope here: the table is in docs/units.md ("Scopes")."""
    return require_scope(conn, scope.value)


async def require_hall_staff(conn: HTTPConnection, directory: PersonDirectory) -> str:
    """The staff member's person id: the token carries the role, and the directory still grants it
    (a revoked role takes effect at once). Everyone else: 403 `forbidden_role`."""
    claims = caller(conn, UnitScope.MANAGE)
    if HALL_STAFF not in claims.get("roles", []) or HALL_STAFF not in await directory.roles_of(claims["sub"]):
        raise errors.Forbidden("Only hall staff may do this.", code="forbidden_role")
    return claims["sub"]


class LoginTooOld(errors.Unauthorized):
    code = "insufficient_user_authentication"


def require_recent_login(claims: AccessTokenClaims, max_age: int, now: float | None = None) -> None:
    """RFC 9470 step-up: a login older than `max_age` seconds is asked to log in again."""
    moment = time.time() if now is None else now
    if moment - claims["auth_time"] > max_age:
        detail = f"Log in again (password or QR code) first: this needs a login at most {max_age // 60} minutes old."
        raise LoginTooOld(
            detail,
            headers={
                "WWW-Authenticate": f'Bearer error="insufficient_user_authentication", '
                f'error_description="A more recent login is required", max_age={max_age}'
            },
        )
