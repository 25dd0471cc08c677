"""The `units_stack` fixture (load with `pytest_plugins = ("tests.support.units_fixtures",)`): one
gateway process and one separate units process for the whole session (see tests/support/units.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gateway.settings import Settings
from tests.support.gateway_server import CAPTCHA_ANSWER, FAST_HASHING, free_port
from tests.support.units import LEGACY_OPEN_UNTIL, ServiceProcess, UnitPki, UnitsStack


@pytest.fixture(scope="session")
def units_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnitsStack]:
    tmp = tmp_path_factory.mktemp("units")
    pki = UnitPki()
    bundle = pki.bundle(tmp / "trusted-cas.pem")
    gateway_port, units_port = free_port(), free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    common = {
        "QRGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'qrgate.db'}",
        "QRGATE_ARGON2_MEMORY_KIB": str(FAST_HASHING["argon2_memory_kib"]),
        "QRGATE_ARGON2_TIME_COST": str(FAST_HASHING["argon2_time_cost"]),
        "QRGATE_CAPTCHA_TEST_ANSWER": CAPTCHA_ANSWER,
        "QRGATE_UNITS_CA_TRUST_BUNDLE": str(bundle),
        "QRGATE_UNITS_JWKS_REFETCH_COOLDOWN": "0.5",
        "QRGATE_LOG_LEVEL": "warning",
    }
    audiences = {
        "units": {"scopes": ["units.read", "units.verify"], "clients": ["web", "withholding-desktop"]},
        "payroll": {"scopes": ["payroll.read"], "clients": ["web"]},
    }
    gateway_env = {
        **common,
        "QRGATE_PUBLIC_URL": gateway_url,
        "QRGATE_KEYS_FILE": str(tmp / "gateway-keys.json"),
        "QRGATE_UNITS_KEYS_FILE": str(tmp / "mounted-units-keys.json"),
        "QRGATE_UNITS_LEGACY_CUTOVER": LEGACY_OPEN_UNTIL,
        "QRGATE_EXCHANGE_AUDIENCES": json.dumps(audiences),
        "QRGATE_CLIENT_SCOPES": json.dumps(
            {
                "web": ["sessions", "units.read", "units.verify", "units.manage", "payroll.read"],
                "withholding-desktop": ["sessions", "units.read", "units.verify", "units.manage"],
                "mobile-app": ["sessions", "units.read", "units.verify", "units.manage"],
            }
        ),
    }
    units_env = {
        **common,
        "QRGATE_PUBLIC_URL": f"http://127.0.0.1:{units_port}",
        "QRGATE_KEYS_FILE": str(tmp / "unused-gateway-keys.json"),
        "QRGATE_UNITS_KEYS_FILE": str(tmp / "units-keys.json"),
    }
    # Both start at once: the migrations take turns, and the units service fetches the gateway's keys lazily.
    gateway = ServiceProcess(["serve"], gateway_env, gateway_port, tmp / "gateway.log").start()
    units = ServiceProcess(
        ["serve-units", "--gateway-url", gateway_url], units_env, units_port, tmp / "units.log"
    ).start()
    try:
        gateway.wait_healthy()
        units.wait_healthy()
        settings = Settings(
            public_url=gateway_url,
            database_url=common["QRGATE_DATABASE_URL"],
            keys_file=gateway_env["QRGATE_KEYS_FILE"],
            database_auto_migrate=False,  # the servers have migrated it
            **FAST_HASHING,
        )
        yield UnitsStack(tmp, gateway, units, settings, pki)
    finally:
        units.stop()
        gateway.stop()
    for log in ("gateway.log", "units.log"):
        text = (tmp / log).read_text()
        assert "Traceback" not in text, f"{log}:\n{text[-3000:]}"
