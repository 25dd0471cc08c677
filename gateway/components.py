"""The parts one gateway process wires together at start-up (see app.lifespan)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from gateway.directory.persons import PersonDirectory
from gateway.draining import Draining
from gateway.guard.guard import SecretGuard
from gateway.guard.hashing import PasswordHashing
from gateway.qr.render import QrImages
from gateway.qr.service import QrService
from gateway.settings import ClientPolicy, Settings
from gateway.state.base import StateStore
from gateway.tokens.bearer import BearerAuth
from gateway.tokens.client_auth import ClientAuthenticator
from gateway.tokens.dpop import DpopVerifier
from gateway.tokens.issuer import TokenIssuer
from gateway.tokens.sessions import SessionManager
from gateway.tokens.verifier import AccessTokenVerifier

if TYPE_CHECKING:  # the accounts parts import gateway_of from here
    from gateway.accounts.parts import AccountParts


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
    bearer: BearerAuth
    client_auth: ClientAuthenticator
    audiences: frozenset[str]
    verifier: AccessTokenVerifier
    qr: QrService
    images: QrImages
    clients: dict[str, ClientPolicy]
    login_guard: SecretGuard
    accounts: AccountParts
    draining: Draining


def gateway_of(conn: HTTPConnection) -> Gateway:
    component: Gateway = conn.app.state.gateway
    return component
