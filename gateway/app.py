"""`create_app(settings)`: the Starlette application; its lifespan wires the parts together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from gateway import errors, health, metrics
from gateway.accounts import login
from gateway.accounts import routes as account_routes
from gateway.accounts.lockout import Lockout, LockoutPolicy
from gateway.accounts.parts import AccountParts
from gateway.accounts.passwords import PasswordHashing
from gateway.components import Gateway, gateway_of
from gateway.directory.db import create_engine, migrate
from gateway.directory.persons import DatabaseUnavailable, PersonDirectory
from gateway.draining import Draining
from gateway.middleware import BodyLimitMiddleware, ObserveMiddleware
from gateway.qr import http as qr_http
from gateway.qr.render import QrImages
from gateway.qr.service import QrService
from gateway.settings import Settings
from gateway.state.base import StateStore
from gateway.state.memory import MemoryStore
from gateway.tokens import endpoints as token_endpoints
from gateway.tokens import routes as token_routes
from gateway.tokens.bearer import BearerAuth
from gateway.tokens.client_auth import ClientAuthenticator
from gateway.tokens.dpop import DpopVerifier, StoreReplayCache
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.keys import KeyFile
from gateway.tokens.sessions import SessionManager
from gateway.tokens.verifier import AccessTokenVerifier, StaticKeys
from gateway.units.app import UnitsMount, create_units_app, mounted_lifespan
from gateway.web import pages as web_pages

log = logging.getLogger("qrgate")


def create_store(settings: Settings) -> StateStore:
    if not settings.redis_url:
        return MemoryStore()
    from gateway.state.redis import RedisStore

    return RedisStore.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
        retries=settings.redis_retries,
    )


def password_hashing(settings: Settings) -> PasswordHashing:
    return PasswordHashing(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        workers=settings.hash_workers,
    )


def assemble(settings: Settings) -> Gateway:
    """Build every part (no I/O beyond reading or creating the key file); `start` and `close` below
    bring up and take down what talks to the network."""
    store = create_store(settings)
    engine = create_engine(settings.database_url)
    key_file = KeyFile(settings.keys_file, settings.signing_alg)
    issuer = TokenIssuer(settings, key_file)
    sessions = SessionManager(settings, store, issuer)
    verifier = AccessTokenVerifier(
        StaticKeys(lambda: key_file.ring.verification_keys),
        issuer=settings.issuer,
        audience=settings.token_audience,
    )
    dpop = DpopVerifier(StoreReplayCache(store))
    directory = PersonDirectory(engine)
    draining = Draining()
    return Gateway(
        settings=settings,
        store=store,
        engine=engine,
        directory=directory,
        hashing=password_hashing(settings),
        issuer=issuer,
        sessions=sessions,
        dpop=dpop,
        bearer=BearerAuth(verifier, sessions, dpop, settings.issuer),
        client_auth=ClientAuthenticator(settings, store),
        audiences=frozenset({settings.token_audience, *settings.exchange_audiences}),
        verifier=verifier,
        qr=QrService(settings, store, sessions, directory, draining),
        images=QrImages(),
        clients=settings.client_policies(),
        login_lockout=Lockout(
            store,
            LockoutPolicy(
                settings.password_max_failures,
                settings.password_lockout_seconds,
                "login",
                captcha_memory=settings.login_captcha_memory,
            ),
        ),
        accounts=AccountParts.create(settings, store, engine),
        draining=draining,
    )


@asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[None]:
    """Connect what the parts need, and take it down again in reverse order."""
    try:
        if gateway.settings.database_auto_migrate:
            await migrate(gateway.engine)
        await gateway.store.start()
        yield
    finally:
        await gateway.accounts.close()
        await gateway.store.close()
        await gateway.engine.dispose()
        gateway.hashing.close()


BACKEND_OF_CODE = {"store_unavailable": "store", "database_unavailable": "database"}


async def on_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.GatewayError)
    backend = BACKEND_OF_CODE.get(exc.code)
    if backend is not None:
        metrics.labelled(metrics.BACKEND_ERRORS, backend).inc()
        log.warning("backend unavailable", extra={"backend": backend, "path": request.url.path})
    return errors.problem_response(exc)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = dict(exc.headers or {})
        return errors.problem_response(
            errors.MethodNotAllowed(f"{request.method} is not allowed here.", headers=allowed)
        )
    if exc.status_code == 404:
        return errors.problem_response(errors.NotFound(f"No such resource: {request.url.path}"))
    return errors.problem_response(errors.BadRequest(str(exc.detail), status=exc.status_code))


async def on_database_error(request: Request, exc: Exception) -> Response:
    """Any driver error that reaches here means the database is unreachable or failing: 503, and
    the pool reconnects by itself (pre-ping) when it is back. Integrity errors are bugs: 500."""
    if isinstance(exc, IntegrityError):
        return await on_unexpected(request, exc)
    metrics.labelled(metrics.BACKEND_ERRORS, "database").inc()
    log.warning("database unavailable: %s", exc.__class__.__name__, extra={"path": request.url.path})
    return errors.problem_response(DatabaseUnavailable("The directory database is unavailable."))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return errors.problem_response(errors.InternalError("An internal error occurred; it has been logged."))


def create_app(settings: Settings | None = None) -> Starlette:
    config = settings or Settings()
    units = create_units_app(config) if config.units_mount else None  # trusts us over HTTP, like any service

    gateway = assemble(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(gateway), mounted_lifespan(units):
            yield

    app = Starlette(
        routes=[
            *qr_http.routes(gateway.qr, images=gateway.images, bearer=gateway.bearer, draining=gateway.draining),
            *login.routes(),
            *account_routes.routes(),
            *token_routes.routes(),
            *token_endpoints.routes(),
            *health.routes(with_metrics=config.metrics_port == 0),
            *web_pages.routes(),
            *([UnitsMount(units)] if units is not None else []),
        ],
        middleware=[
            Middleware(ObserveMiddleware),
            Middleware(BodyLimitMiddleware, limit=config.max_body_bytes),
        ],
        exception_handlers={
            errors.GatewayError: on_gateway_error,
            HTTPException: on_http_exception,
            DBAPIError: on_database_error,
            SQLAlchemyTimeoutError: on_database_error,
            Exception: on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app


__all__ = ["create_app", "gateway_of"]
