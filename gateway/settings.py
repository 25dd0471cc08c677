"""Every knob of the gateway, in one place.

Each field reads from the environment as ``QRGATE_<NAME>`` (for example ``QRGATE_QR_TTL=90``).
Handlers never hold a literal lifetime or limit: they read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """What an OAuth client (an app the gateway knows) may do."""

    client_id: str
    may_mint_qr: bool = False
    may_scan_qr: bool = False


DEFAULT_CLIENTS = "withholding-desktop:mint,mobile-app:scan,web"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QRGATE_", frozen=True, extra="ignore")

    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="Base URL clients reach the gateway at; the QR content and token issuer derive from it.",
    )
    database_url: str = Field(
        "sqlite+aiosqlite:///./qrgate.db",
        description="Durable directory: SQLAlchemy async URL (sqlite+aiosqlite or postgresql+asyncpg).",
    )
    database_auto_migrate: bool = Field(True, description="Run the Alembic migrations at start-up.")
    redis_url: str = Field(
        "",
        description="Ephemeral state store. Empty: in-process memory (one process only). "
        "redis://, rediss://, redis+sentinel:// or redis+cluster:// URLs select Redis.",
    )
    keys_file: str = Field(
        "./qrgate-keys.json", description="Signing keys (private JWKS); generated on first start, mode 0600."
    )
    signing_alg: Literal["ES256", "EdDSA"] = Field("ES256", description="Algorithm of generated keys.")

    qr_ttl: int = Field(120, ge=5, le=600, description="Seconds a QR code lives from mint.")
    qr_purge_after: int = Field(
        300, ge=10, le=3600, description="Seconds a finished QR is remembered (410 instead of 404)."
    )
    hello_timeout: float = Field(5.0, gt=0, le=60, description="Seconds a WebSocket has to send hello.")
    long_poll_max_wait: int = Field(30, ge=1, le=60, description="Upper bound of ?wait= on long-poll.")
    ws_ping_interval: float = Field(20.0, gt=0, description="WebSocket keep-alive ping interval (s).")
    ws_max_message: int = Field(4096, ge=256, le=65536, description="Largest WebSocket message (bytes).")
    max_body_bytes: int = Field(16384, ge=1024, le=1048576, description="Largest HTTP request body.")

    access_token_ttl: int = Field(600, ge=30, le=3600, description="Access-token lifetime (s).")
    refresh_token_ttl: int = Field(7 * 24 * 3600, ge=300, description="Absolute lifetime of a refresh session (s).")
    token_audience: str = Field("qrgate-sso", description="`aud` of access tokens issued for the SSO.")
    clients: str = Field(
        DEFAULT_CLIENTS,
        description="Known client ids, comma-separated; `:mint` may mint QR codes, `:scan` may scan them.",
    )

    password_max_failures: int = Field(5, ge=1, le=100, description="Wrong passwords before lockout.")
    password_lockout_seconds: int = Field(7200, ge=1, description="How long a lockout lasts (s).")
    argon2_memory_kib: int = Field(19456, ge=1024, description="argon2id memory cost (KiB).")
    argon2_time_cost: int = Field(2, ge=1, description="argon2id iterations.")
    argon2_parallelism: int = Field(1, ge=1, description="argon2id lanes.")
    hash_workers: int = Field(2, ge=1, le=64, description="Threads that hash passwords off the event loop.")

    trusted_proxies: str = Field(
        "127.0.0.1", description="Addresses whose X-Forwarded-For is trusted (comma-separated, or *)."
    )

    @property
    def issuer(self) -> str:
        return self.public_url.rstrip("/")

    def client_policies(self) -> dict[str, ClientPolicy]:
        policies: dict[str, ClientPolicy] = {}
        for item in self.clients.split(","):
            name, _, rights = item.strip().partition(":")
            if not name:
                continue
            flags = set(rights.split("+")) if rights else set()
            policies[name] = ClientPolicy(name, may_mint_qr="mint" in flags, may_scan_qr="scan" in flags)
        return policies
