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
    waiting_sockets: int = 0

    @property
    def started(self) -> bool:
        return self.not_ready.is_set()

    async def sockets_closed(self, timeout: float) -> bool:
        """Wait until every waiting WebSocket has closed (True), or `timeout` (False)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.waiting_sockets and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return self.waiting_sockets == 0


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
