"""The parts one gateway process wires together at start-up (see app.lifespan)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from gateway.accounts.lockout import Lockout
from gateway.accounts.passwords import PasswordHashing
from gateway.directory.persons import PersonDirectory
from gateway.qr.render import QrImages
from gateway.qr.service import QrService
from gateway.settings import ClientPolicy, Settings
from gateway.state.base import StateStore
from gateway.tokens.client_auth import ClientAuthenticator
from gateway.tokens.dpop import DpopVerifier
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.sessions import SessionManager
from gateway.tokens.verifier import AccessTokenVerifier

if TYPE_CHECKING:  # the accounts parts import gateway_of from here
    from gateway.accounts.parts import AccountParts


@dataclass
class Draining:
    """Shutdown in two steps. `started`: readiness fails, so load balancers stop sending new work
    (requests are still served). `closing`: open WebSockets close with 1001 and long-polls answer,
    and clients reconnect to another process."""

    not_ready: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def started(self) -> bool:
        return self.not_ready.is_set()


@dataclass
class Gateway:
    settings: Settings
    store: StateStore
    engine: AsyncEngine
    directory: PersonDirectory
    hashing: PasswordHashing
    issuer: TokenIssuer
    sessions: SessionManager
    dpop: DpopVerifier
    client_auth: ClientAuthenticator
    audiences: frozenset[str]
    verifier: AccessTokenVerifier
    qr: QrService
    images: QrImages
    clients: dict[str, ClientPolicy]
    login_lockout: Lockout
    accounts: AccountParts
    draining: Draining


def gateway_of(conn: HTTPConnection) -> Gateway:
    component: Gateway = conn.app.state.gateway
    return component
