"""A gateway with downstream services configured: confidential clients (one by client secret, one by
private_key_jwt, one allowed nothing) and a second exchange audience only a confidential client may get."""

from __future__ import annotations

import hashlib
from pathlib import Path

from joserfc.jwk import ECKey

from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

SERVICE_SECRET = "payroll-" + "s" * 40
SERVICE_KEY = ECKey.generate_key("P-256", auto_kid=True)


def start_sso_gateway(tmp: Path) -> ThreadedGateway:
    port = free_port()
    clients = {
        "payroll-service": {
            "secret_sha256": hashlib.sha256(SERVICE_SECRET.encode()).hexdigest(),
            "may_introspect": True,
            "may_exchange": True,
        },
        "audit-service": {"jwks": {"keys": [SERVICE_KEY.as_dict(private=False)]}, "may_introspect": True},
        "nosy-service": {"secret_sha256": hashlib.sha256(b"nosy-secret").hexdigest()},
    }
    audiences = {
        "units": {"scopes": ["units.read", "units.verify"], "clients": ["withholding-desktop", "mobile-app"]},
        "payroll": {"scopes": ["payroll.read"], "clients": []},
    }
    everything = ["sessions", "units.read", "units.verify", "units.manage", "payroll.read"]
    scopes = {client: everything for client in ("withholding-desktop", "mobile-app", "web")}
    settings = make_settings(
        tmp, port, confidential_clients=clients, exchange_audiences=audiences, client_scopes=scopes
    )
    return ThreadedGateway(settings, port).start()
