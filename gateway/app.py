"""`create_app(settings)`: the Starlette application. The one place where the gateway's services are
built (`Services.create`) and their routes assembled; the lifespan connects and closes them. No
feature module reaches back here: each gets what it needs as arguments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import health
from gateway.accounts import admin, login, rare_chars, recovery, regions, registration, sms
from gateway.accounts.login import PasswordLogins
from gateway.accounts.records import AccountRecords
from gateway.backends import create_store, password_hashing
from gateway.directory.audit import AuditLog
from gateway.directory.db import create_engine, migrate
from gateway.directory.persons import PersonDirectory
from gateway.draining import Draining
from gateway.error_handlers import exception_handlers
from gateway.guard import captcha
from gateway.guard.captcha import Captchas
from gateway.guard.guard import SecretGuard
from gateway.guard.hashing import PasswordHashing
from gateway.guard.throttle import Throttle
from gateway.middleware import BodyLimitMiddleware, ForwardedMiddleware, ObserveMiddleware
from gateway.oidc import http as oidc_http
from gateway.oidc import logout as oidc_logout
from gateway.oidc import signin as oidc_signin
from gateway.oidc.backchannel import BackchannelSender
from gateway.oidc.clients import RelyingParties
from gateway.oidc.provider import OidcProvider
from gateway.qr import http as qr_http
from gateway.qr.render import QrImages
from gateway.qr.service import QrService
from gateway.settings import Settings
from gateway.state.attempts import AttemptLimits
from gateway.state.base import StateStore
from gateway.state.keys import Guarded, Throttles
from gateway.tokens import endpoints as token_endpoints
from gateway.tokens import routes as token_routes
from gateway.tokens.bearer import BearerAuth
from gateway.tokens.client_auth import ClientAuthenticator
from gateway.tokens.dpop import DpopVerifier, StoreReplayCache
from gateway.tokens.endpoints import TokenEndpoints
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.keys import KeyFile
from gateway.tokens.session_ends import SessionEndFeed
from gateway.tokens.session_ends import routes as session_end_routes
from gateway.tokens.sessions import SessionManager
from gateway.units.app import UnitsMount, create_units_app, mounted_lifespan
from gateway.web import pages as web_pages
from qrgate_verify.verifier import AccessTokenVerifier, StaticKeys


@dataclass
class Services:
    """Everything one gateway process runs. Built without I/O beyond the key file; `running()` connects."""

    settings: Settings
    store: StateStore
    engine: AsyncEngine
    hashing: PasswordHashing
    draining: Draining
    issuer: TokenIssuer
    bearer: BearerAuth
    tokens: TokenEndpoints
    qr: QrService
    images: QrImages
    directory: PersonDirectory
    captchas: Captchas
    logins: PasswordLogins
    sms: sms.SmsChallenges
    registrations: registration.Registrations
    recovery: recovery.Recovery
    hall: admin.HallDesk
    rare_chars: rare_chars.RareChars
    oidc: OidcProvider
    logouts: oidc_logout.Logouts
    backchannel: BackchannelSender
    dpop: DpopVerifier
    session_ends: SessionEndFeed

    @classmethod
    def create(cls, settings: Settings, draining: Draining | None = None) -> Services:
        store = create_store(settings)
        engine = create_engine(settings.database_url)
        hashing = password_hashing(settings)
        directory, audit, records = PersonDirectory(engine), AuditLog(engine), AccountRecords(engine)
        key_file = KeyFile(settings.keys_file, settings.signing_alg)
        issuer = TokenIssuer(settings, key_file)
        sessions = SessionManager(settings, store, issuer)
        verifier = AccessTokenVerifier(
            StaticKeys(lambda: key_file.ring.verification_keys),
            issuer=settings.issuer,
            audience=settings.token_audience,
        )
        dpop = DpopVerifier(StoreReplayCache(store))
        bearer = BearerAuth(verifier, sessions, dpop, settings.issuer)
        clients = settings.client_policies()
        draining = draining or Draining()
        captchas = Captchas(settings, store)
        identity_ip = Throttle(
            store,
            Throttles.IDENTITY_IP,
            settings.identity_ip_max_attempts,
            settings.identity_ip_window,
            what="identity checks from this address",
        )
        login_guard = SecretGuard(
            store,
            scope=Guarded.LOGIN,
            limits=AttemptLimits(
                settings.password_max_failures,
                settings.password_lockout_seconds,
                settings.attempt_reservation_seconds,
                settings.login_captcha_memory,
            ),
            captchas=captchas,
            ip_throttle=Throttle(
                store,
                Throttles.LOGIN_IP,
                settings.login_ip_max_attempts,
                settings.login_ip_window,
                what="login attempts",
            ),
        )
        challenges = sms.SmsChallenges(
            settings, store, sms.create_sender(settings), records=records, identity_ip=identity_ip, captchas=captchas
        )
        registrations = registration.Registrations.create(
            settings, store, records=records, hashing=hashing, sms=challenges, audit=audit, identity_ip=identity_ip
        )
        recover = recovery.Recovery(
            settings=settings,
            store=store,
            records=records,
            hashing=hashing,
            login_guard=login_guard,
            sessions=sessions,
            sms=challenges,
            audit=audit,
            identity_ip=identity_ip,
        )
        parties = RelyingParties(engine, refresh=settings.oidc_clients_refresh)
        oidc = OidcProvider(settings, store, parties, sessions, issuer, directory)
        backchannel = BackchannelSender(settings, store, parties, lambda: issuer.ring)
        session_ends = SessionEndFeed(settings, store, issuer, draining)
        sessions.on_end(session_ends.publish)  # first: resource servers hear of an end before slower listeners run
        sessions.on_end(backchannel.session_ended)
        return cls(
            settings=settings,
            store=store,
            engine=engine,
            hashing=hashing,
            draining=draining,
            issuer=issuer,
            bearer=bearer,
            tokens=TokenEndpoints(
                settings=settings,
                sessions=sessions,
                issuer=issuer,
                verifier=verifier,
                dpop=dpop,
                client_auth=ClientAuthenticator(settings, store),
                bearer=bearer,
                audiences=frozenset({settings.token_audience, *settings.exchange_audiences}),
                grants={"authorization_code": oidc_http.token_grant(oidc, dpop)},
                refreshing_client=oidc_http.refreshing_client(oidc),
            ),
            qr=QrService(settings, store, sessions, directory, draining),
            images=QrImages(),
            directory=directory,
            captchas=captchas,
            logins=PasswordLogins(
                directory,
                hashing,
                login_guard,
                sessions,
                audit,
                clients,
                change_ticket=recover.new_ticket,
                change_ticket_ttl=settings.reset_ticket_ttl,
            ),
            sms=challenges,
            registrations=registrations,
            recovery=recover,
            hall=admin.HallDesk(bearer, directory, records, registrations, recover, audit),
            rare_chars=rare_chars.RareChars(),
            oidc=oidc,
            logouts=oidc_logout.Logouts(oidc, store),
            backchannel=backchannel,
            dpop=dpop,
            session_ends=session_ends,
        )

    def routes(self, *, units_mounted: bool) -> list[BaseRoute]:
        settings = self.settings
        # Starlette tries routes in order: the busiest (a login's, a relying party's) come first.
        return [
            *qr_http.routes(
                self.qr,
                images=self.images,
                bearer=self.bearer,
                draining=self.draining,
                reauthenticate=self.logins.reauthenticate,
            ),
            *token_endpoints.routes(self.tokens),
            *session_end_routes(self.session_ends),
            *oidc_http.routes(self.oidc, self.bearer, self.dpop),
            *login.routes(self.logins),
            captcha.route(self.captchas),
            *sms.routes(self.sms),
            *registration.routes(self.registrations),
            *recovery.routes(self.recovery),
            *admin.routes(self.hall),
            *rare_chars.routes(self.rare_chars),
            *regions.routes(),
            *token_routes.routes(self.issuer),
            *oidc_signin.routes(self.oidc, self.logins, self.qr),
            *oidc_logout.routes(self.logouts, self.oidc),
            *health.routes(
                self.store,
                self.engine,
                lambda: self.issuer.ring,
                self.draining,
                with_metrics=settings.metrics_public,
            ),
            *web_pages.routes(settings, units_mounted=units_mounted),
        ]

    def ops_app(self) -> Starlette:
        """The operations port's app (`QRGATE_METRICS_PORT`): /healthz, /readyz and /metrics."""
        routes = health.routes(self.store, self.engine, lambda: self.issuer.ring, self.draining, with_metrics=True)
        return Starlette(routes=routes, exception_handlers=exception_handlers())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Connect what the services need, and take it down again in reverse order."""
        try:
            if self.settings.database_auto_migrate:
                await migrate(self.engine)
            await self.store.start()
            self.backchannel.start()  # delivers logout tokens queued by any process, this one's too
            yield
        finally:
            await self.backchannel.close()  # deliveries in flight go back to the queue, for the next process
            await self.oidc.client_keys.close()
            self.captchas.close()
            await self.sms.sender.close()
            await self.registrations.close()
            await self.store.close()
            await self.engine.dispose()
            self.hashing.close()


def create_app(
    settings: Settings | None = None, *, draining: Draining | None = None, services: Services | None = None
) -> Starlette:
    """`draining`: the server's shutdown steps (`qrgate serve` passes its own, to drain on SIGTERM);
    `services`: built by the caller (tests that drive a service's Python API beside its routes)."""
    config = services.settings if services is not None else settings or Settings()
    # The mounted units service trusts us as any service does (our JWKS, our session-end feed), but
    # asks in process: httpx over ASGI to this very app, bound below once the app exists.
    this_app: list[ASGIApp] = []

    async def in_process(scope: Scope, receive: Receive, send: Send) -> None:
        await this_app[0](scope, receive, send)

    gateway = httpx.ASGITransport(app=in_process)
    units = create_units_app(config, gateway=gateway) if config.units_mount else None
    services = services or Services.create(config, draining)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with services.running(), mounted_lifespan(units):
            yield

    app = Starlette(
        routes=[
            *services.routes(units_mounted=units is not None),
            *([UnitsMount(units)] if units is not None else []),
        ],
        middleware=[
            Middleware(ForwardedMiddleware, trusted=config.trusted_proxies),
            Middleware(ObserveMiddleware),
            Middleware(BodyLimitMiddleware, limit=config.max_body_bytes),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.ops_app = services.ops_app()  # `qrgate serve` serves it on the operations port
    this_app.append(app)
    return app


__all__ = ["Services", "create_app"]
