"""Transitional: what the QR adapters still read from `app.state` until they take their services as
arguments like every other feature."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from gateway.directory.persons import PersonDirectory
from gateway.draining import Draining
from gateway.qr.render import QrImages
from gateway.qr.service import QrService
from gateway.settings import ClientPolicy, Settings
from gateway.state.base import StateStore
from gateway.tokens.bearer import BearerAuth


@dataclass
class Gateway:
    settings: Settings
    store: StateStore
    directory: PersonDirectory
    bearer: BearerAuth
    qr: QrService
    images: QrImages
    clients: dict[str, ClientPolicy]
    draining: Draining


def gateway_of(conn: HTTPConnection) -> Gateway:
    component: Gateway = conn.app.state.gateway
    return component
