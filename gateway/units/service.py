"""The parts of one units service, built with its app and started by its lifespan.

The service has its own state store (lockout counters, captchas, CA challenges), its own signing keys
and its own tables; it shares the gateway's database (one migration chain) and reads the directory
only to resolve the persons hall staff and legal representatives name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.backends import create_store, password_hashing
from gateway.directory.audit import AuditLog
from gateway.directory.db import create_engine, migrate
from gateway.directory.persons import PersonDirectory
from gateway.guard.captcha import Captchas
from gateway.guard.guard import Refusals, SecretGuard
from gateway.guard.hashing import PasswordHashing
from gateway.guard.throttle import Throttle
from gateway.settings import Settings
from gateway.state.attempts import AttemptLimits
from gateway.state.base import StateStore
from gateway.state.keys import Guarded, Throttles
from gateway.tokens.dpop import DpopVerifier, StoreReplayCache
from gateway.tokens.keys import KeyFile
from gateway.units.access import (
    IN_PROCESS_GATEWAY,
    GatewayKeys,
    GatewayTokenVerifier,
    gateway_issuer,
    gateway_url,
    gateway_verifier,
)
from gateway.units.certificates import CaTrust
from gateway.units.records import UnitRecords
from gateway.units.tokens import UnitTokens
from qrgate_verify.session_ends import SessionEnds


def units_keys_file(settings: Settings) -> Path:
    if settings.units_keys_file:
        return Path(settings.units_keys_file)
    gateway_keys = Path(settings.keys_file)
    return gateway_keys.with_name("units-" + gateway_keys.name)


class DeclarationPasswordRefusals(Refusals):
    captcha_path = "/units/v1/captcha"
    wrong_text = "The declaration password is wrong."
    locked_text = (
        "Too many wrong declaration passwords. Try again in {minutes} minutes, or have the legal representative "
        "or finance manager reset it."
    )


@dataclass
class UnitsService:
    settings: Settings
    store: StateStore
    engine: AsyncEngine
    records: UnitRecords
    directory: PersonDirectory
    audit: AuditLog
    hashing: PasswordHashing
    guard: SecretGuard
    captchas: Captchas
    tokens: UnitTokens
    gateway_keys: GatewayKeys
    verifier: GatewayTokenVerifier
    dpop: DpopVerifier
    ca_trust: CaTrust | None
    session_ends: SessionEnds  # the gateway's session-end feed, followed over HTTP (docs/downstream.md)
    in_process: httpx.AsyncClient | None = None  # mounted: the feed's client, to the gateway in process

    @classmethod
    def create(cls, settings: Settings, *, gateway: httpx.AsyncBaseTransport | None = None) -> UnitsService:
        """`gateway`: a transport to the gateway in this process (the mounted service: its keys and
        its session-end feed without a socket, so a public port at its connection limit or a busy
        proxy cannot cut the service off from them); standalone, the gateway is reached over HTTP."""
        store = create_store(settings)
        engine = create_engine(settings.database_url)
        verifier, keys = gateway_verifier(settings, gateway)
        in_process = httpx.AsyncClient(transport=gateway, follow_redirects=False) if gateway is not None else None
        base = IN_PROCESS_GATEWAY if gateway is not None else gateway_url(settings)
        captchas = Captchas(settings, store)
        guard = SecretGuard(
            store,
            scope=Guarded.DECLARATION_PASSWORD,
            limits=AttemptLimits(
                settings.units_password_max_failures,
                settings.units_password_lockout_seconds,
                settings.attempt_reservation_seconds,
                settings.login_captcha_memory,
            ),
            captchas=captchas,
            ip_throttle=Throttle(
                store,
                Throttles.UNIT_IP,
                settings.login_ip_max_attempts,
                settings.login_ip_window,
                what="declaration password attempts",
            ),
            refusals=DeclarationPasswordRefusals(),
        )
        trust = CaTrust.from_file(settings.units_ca_trust_bundle) if settings.units_ca_trust_bundle else None
        return cls(
            settings=settings,
            store=store,
            engine=engine,
            records=UnitRecords(engine),
            directory=PersonDirectory(engine),
            audit=AuditLog(engine),
            hashing=password_hashing(settings),
            guard=guard,
            captchas=captchas,
            tokens=UnitTokens(settings, KeyFile(units_keys_file(settings), settings.signing_alg)),
            gateway_keys=keys,
            verifier=verifier,
            dpop=DpopVerifier(StoreReplayCache(store)),
            ca_trust=trust,
            session_ends=SessionEnds(
                base + "/v1/session-ends",
                keys,
                issuer=gateway_issuer(settings),
                client=in_process,
                wait=settings.units_session_ends_wait,
                max_staleness=settings.units_session_ends_max_staleness,
            ),
            in_process=in_process,
        )

    async def start(self) -> None:
        if self.settings.database_auto_migrate:
            await migrate(self.engine)
        await self.store.start()
        await self.session_ends.start()

    async def close(self) -> None:
        self.captchas.close()
        await self.session_ends.aclose()
        if self.in_process is not None:
            await self.in_process.aclose()
        await self.gateway_keys.aclose()
        await self.store.close()
        await self.engine.dispose()
        self.hashing.close()
