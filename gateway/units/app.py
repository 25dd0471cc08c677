"""The units service as Starlette apps.

`create_units_app(settings)` is what `qrgate serve` mounts at `/units`; its lifespan starts and stops
the service's parts, and the gateway's lifespan runs it (Starlette does not run a mounted app's
lifespan). `create_standalone_app(settings)` is what `qrgate serve-units` runs: the same app mounted at
`/units`, so paths, the issuer (`{public_url}/units`) and the JWKS URL are the same in both modes.

Every route but the public ones (the units JWKS, the captcha, the legacy logins, which have no
person) needs a gateway access token, checked by `gateway.tokens.TokenAuthMiddleware`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from functools import partial
from typing import cast

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from gateway import health
from gateway.error_handlers import exception_handlers
from gateway.health import healthz
from gateway.jsonutil import dumps
from gateway.middleware import BodyLimitMiddleware, ForwardedMiddleware
from gateway.settings import Settings
from gateway.units import admin, authorizations, ca, declaration, legacy, linking, listing, verification
from gateway.units.service import UnitsService
from gateway.units.tokens import UNITS_PATH
from qrgate_verify.starlette import TokenAuthMiddleware

PUBLIC_PATHS = tuple(f"{UNITS_PATH}{path}" for path in ("/.well-known/", "/v1/captcha", "/v1/legacy/"))


async def jwks(service: UnitsService, request: Request) -> Response:
    ring = service.tokens.keys.ring
    return Response(
        dumps(ring.public_jwks()),
        media_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def readyz(service: UnitsService, request: Request) -> Response:
    """The standalone service can serve: its store and database answer and its keys are loaded.
    (The gateway's JWKS is not checked: readiness must not cascade from another service.)"""
    checks = await health.backend_checks(service.store, service.engine, service.tokens.keys.ring)
    return health.readiness(checks, ready=all(value == "ok" for value in checks.values()))


def routes(service: UnitsService) -> list[BaseRoute]:
    return [
        Route("/.well-known/jwks.json", partial(jwks, service), methods=["GET"]),
        *listing.routes(service),
        *linking.routes(service),
        *verification.routes(service),
        *authorizations.routes(service),
        *declaration.routes(service),
        *ca.routes(service),
        *legacy.routes(service),
        *admin.routes(service),
    ]


def create_units_app(
    settings: Settings, service: UnitsService | None = None, *, gateway: httpx.AsyncBaseTransport | None = None
) -> Starlette:
    """`gateway`: the mounting gateway in process (see `UnitsService.create`)."""
    service = service or UnitsService.create(settings, gateway=gateway)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.close()

    app = Starlette(
        routes=routes(service),
        middleware=[
            Middleware(
                TokenAuthMiddleware,
                verifier=service.verifier,
                public_paths=PUBLIC_PATHS,
                public_base_url=settings.issuer,
                dpop=service.dpop,
                session_ends=service.session_ends,
            )
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    return app


class UnitsMount(Mount):
    """The units app at /units, for any path below it: Starlette's mount pattern stops at a line
    break, so a TIN holding a decoded `%0A` would get the outer app's 404 instead of the units
    service's own answer (401, then 400 `invalid_tin`)."""

    def __init__(self, app: Starlette) -> None:
        super().__init__(UNITS_PATH, app=app)
        self.path_regex = re.compile(self.path_regex.pattern, re.DOTALL)


def create_standalone_app(settings: Settings) -> Starlette:
    service = UnitsService.create(settings)
    units = create_units_app(settings, service)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mounted_lifespan(units):
            yield

    app = Starlette(
        routes=[
            UnitsMount(units),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", partial(readyz, service), methods=["GET"]),
        ],
        middleware=[
            Middleware(ForwardedMiddleware, trusted=settings.trusted_proxies),
            Middleware(BodyLimitMiddleware, limit=settings.max_body_bytes),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    return app


def mounted_lifespan(app: Starlette | None) -> AbstractAsyncContextManager[None]:
    """The units app's lifespan, run by the app that mounts it (Starlette does not run a mounted app's)."""
    if app is None:
        return nullcontext()
    return cast(AbstractAsyncContextManager[None], app.router.lifespan_context(app))
