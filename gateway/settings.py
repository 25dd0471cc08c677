"""Every knob of the gateway, in one place.

Each field reads from the environment as ``QRGATE_<NAME>`` (for example ``QRGATE_QR_TTL=90``).
Handlers never hold a literal lifetime or limit: they read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """What an OAuth client (an app the gateway knows) may do."""

    client_id: str
    may_mint_qr: bool = False
    may_scan_qr: bool = False


DEFAULT_CLIENTS = "withholding-desktop:mint,mobile-app:scan,web"


class AudiencePolicy(BaseModel):
    """A downstream subsystem reachable by token exchange (RFC 8693)."""

    scopes: list[str] = Field(default_factory=list, description="Scopes a token for it may carry.")
    clients: list[str] = Field(default_factory=list, description="Clients allowed to exchange for it.")


class ConfidentialClient(BaseModel):
    """A downstream service that authenticates to the gateway (introspection, exchange with `act`)."""

    secret_sha256: str | None = Field(None, description="hex SHA-256 of the client secret (secret auth)")
    jwks: dict[str, Any] | None = Field(None, description="public JWKS for private_key_jwt auth")
    may_introspect: bool = False
    may_exchange: bool = False


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
    redis_timeout: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Seconds a Redis command may wait for its reply; then its connection is closed and "
        "the command fails with 503, or is sent again where that is safe (reads, whole-value writes).",
    )
    redis_connect_timeout: float = Field(
        2.0, gt=0, le=60, description="Seconds to connect to a Redis server (or a Sentinel) and log in."
    )
    redis_retries: int = Field(
        3,
        ge=0,
        le=10,
        description="Further attempts for a Redis command that could not be sent, or is safe to send again, "
        "with capped exponential backoff (50 ms doubling to 500 ms), before the request gets 503.",
    )
    keys_file: str = Field(
        "./qrgate-keys.json", description="Signing keys (private JWKS); generated on first start, mode 0600."
    )
    signing_alg: Literal["ES256", "EdDSA"] = Field("ES256", description="Algorithm of generated keys.")

    qr_ttl: int = Field(120, ge=5, le=600, description="Seconds a QR code lives from mint.")
    qr_mint_ip_max: int = Field(
        600,
        ge=1,
        description="QR codes one IP address may mint per qr_mint_ip_window, per gateway process (a token "
        "bucket in memory): generous, since a tax hall's desktops share one NAT address and each mints anew "
        "every qr_ttl seconds.",
    )
    qr_mint_ip_window: int = Field(60, ge=1, description="Window of qr_mint_ip_max (s).")
    qr_live_ip_max: int = Field(
        1000,
        ge=1,
        description="Live QR codes (unexpired, not yet delivered, cancelled or abandoned) one IP address (an "
        "IPv6 /64) may hold in the store, all gateway processes together; then 429 `too_many_live_codes`.",
    )
    qr_live_max: int = Field(
        100_000,
        ge=1,
        description="Live QR codes the store holds at most (all addresses; about 1.2 kB each in Redis); then "
        "503 `qr_capacity`: bounds the memory that minting can take.",
    )
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
    session_idle_ttl: int = Field(
        8 * 3600, ge=60, description="A refresh session ends after this long without a refresh (s)."
    )
    token_audience: str = Field("qrgate-sso", description="`aud` of access tokens issued for the SSO.")
    clients: str = Field(
        DEFAULT_CLIENTS,
        description="Known client ids, comma-separated; `:mint` may mint QR codes, `:scan` may scan them.",
    )

    client_scopes: dict[str, list[str]] = Field(
        default_factory=lambda: {
            client: ["sessions", "units.read", "units.verify", "units.manage"]
            for client in ("withholding-desktop", "mobile-app", "web")
        },
        description="Scopes the access tokens of a real-name login (password, QR, the browser sign-in) carry, by "
        "client, as JSON: {client_id: [scope, ...]}. A client not named gets none; token exchange narrows them. "
        "`sessions` lets a token list and end the person's sessions (GET/DELETE /v1/sessions).",
    )
    exchange_audiences: dict[str, AudiencePolicy] = Field(
        default_factory=lambda: {
            "units": AudiencePolicy(
                scopes=["units.read", "units.verify"], clients=["withholding-desktop", "web", "mobile-app"]
            )
        },
        description="Token-exchange targets as JSON: {audience: {scopes: [...], clients: [...]}}.",
    )
    confidential_clients: dict[str, ConfidentialClient] = Field(
        default_factory=dict,
        description="Authenticated service clients as JSON: {client_id: {secret_sha256 | jwks, may_introspect, "
        "may_exchange}}.",
    )
    key_activation_delay: int = Field(
        900, ge=0, description="Seconds a rotated-in key is published before it signs (> JWKS cache age)."
    )

    password_max_failures: int = Field(5, ge=1, le=100, description="Wrong passwords before lockout.")
    password_lockout_seconds: int = Field(7200, ge=1, description="How long a lockout lasts (s).")
    argon2_memory_kib: int = Field(19456, ge=1024, description="argon2id memory cost (KiB).")
    argon2_time_cost: int = Field(2, ge=1, description="argon2id iterations.")
    argon2_parallelism: int = Field(1, ge=1, description="argon2id lanes.")
    hash_workers: int = Field(2, ge=1, le=64, description="Threads that hash passwords off the event loop.")

    # Accounts: captcha, lockout, registration, SMS, face verification, password recovery -----------
    production: bool = Field(
        False, description="A production deployment: refuses dev-only features (dev SMS sender, fixed captcha)."
    )
    captcha_ttl: int = Field(300, ge=30, le=3600, description="Seconds a captcha may be answered (once).")
    captcha_length: int = Field(4, ge=4, le=8, description="Characters shown in a captcha.")
    captcha_test_answer: str = Field(
        "",
        pattern=r"^[A-Za-z0-9]{0,8}$",
        description="Tests only: every captcha shows this text (image and hashing stay real). Refused in production.",
    )
    captcha_ip_max: int = Field(60, ge=1, description="Captchas one IP address may request per captcha_ip_window.")
    captcha_ip_window: int = Field(60, ge=1, description="Window of captcha_ip_max (s).")
    attempt_reservation_seconds: float = Field(
        10.0,
        gt=0,
        le=120,
        description="How long a secret check in flight holds its place among the attempts left before a lock; "
        "a process killed mid-check leaves nothing behind after this (s).",
    )
    login_captcha_memory: int = Field(
        86400, ge=60, description="After a wrong password a captcha stays required this long, or until a success (s)."
    )
    login_ip_max_attempts: int = Field(
        300, ge=1, description="Password-login attempts one IP address may make per login_ip_window."
    )
    login_ip_window: int = Field(60, ge=1, description="Window of login_ip_max_attempts (s).")
    identity_ip_max_attempts: int = Field(
        30, ge=1, description="Identity checks (registration, face, forgotten password) per IP per identity_ip_window."
    )
    identity_ip_window: int = Field(3600, ge=1, description="Window of identity_ip_max_attempts (s).")
    registration_code_ttl: int = Field(7 * 24 * 3600, ge=60, description="Lifetime of a hall registration code (s).")
    registration_code_max_attempts: int = Field(
        5, ge=1, le=100, description="Wrong codes one identity may try before its registration code is void."
    )
    registration_ttl: int = Field(
        1800, ge=60, le=86400, description="Time to complete a registration after the identity check (s)."
    )
    sms_sender: Literal["dev", "webhook"] = Field(
        "dev", description="`dev` writes codes to the server log (refused in production); `webhook` POSTs them."
    )
    sms_webhook_url: str = Field("", description="SMS provider webhook (https URL) for sms_sender=webhook.")
    sms_webhook_secret: SecretStr = Field(
        SecretStr(""), description="Bearer secret sent to the SMS webhook (never logged)."
    )
    sms_webhook_timeout: float = Field(5.0, gt=0, le=60, description="SMS webhook timeout (s).")
    sms_code_ttl: int = Field(300, ge=30, le=3600, description="Lifetime of an SMS code (s).")
    sms_resend_interval: int = Field(60, ge=1, description="At most one SMS per phone and purpose per this many s.")
    sms_daily_cap: int = Field(10, ge=1, description="SMS codes one phone number may receive per day.")
    sms_ip_max: int = Field(30, ge=1, description="SMS codes one IP address may request per sms_ip_window.")
    sms_ip_window: int = Field(3600, ge=1, description="Window of sms_ip_max (s).")
    sms_max_verify_attempts: int = Field(5, ge=1, le=20, description="Wrong tries before an SMS code is void.")
    unknown_identity_secret: SecretStr = Field(
        SecretStr(""),
        description="HMAC secret for the masked phone shown when a forgotten-password SMS is asked for an identity "
        "no account has (so asking twice shows the same); the same on every process, 32 characters or more "
        "(required in production). Empty: random per process (one process only).",
    )
    face_verification_url: str = Field(
        "", description="Face verification service endpoint; empty disables registration by face."
    )
    face_verification_client_id: str = Field("", description="Client id at the face verification service.")
    face_verification_secret: SecretStr = Field(
        SecretStr(""), description="Secret at the face verification service (HTTP Basic, never logged)."
    )
    face_verification_timeout: float = Field(10.0, gt=0, le=60, description="Face verification timeout (s).")
    face_max_attempts: int = Field(5, ge=1, description="Face verifications one identity may try per day.")
    reset_ticket_ttl: int = Field(600, ge=60, le=3600, description="Lifetime of a password-reset ticket (s).")

    @model_validator(mode="after")
    def _refuse_dev_features_in_production(self) -> Self:
        if self.production and self.captcha_test_answer:
            raise ValueError("QRGATE_CAPTCHA_TEST_ANSWER is for tests only: it must be empty in production")
        if self.production and self.sms_sender == "dev":
            raise ValueError(
                "the dev SMS sender writes codes to the log: in production set QRGATE_SMS_SENDER=webhook "
                "and QRGATE_SMS_WEBHOOK_URL"
            )
        if self.production and len(self.unknown_identity_secret.get_secret_value()) < 32:
            raise ValueError(
                "in production set QRGATE_UNKNOWN_IDENTITY_SECRET (32 characters or more, the same on every "
                "process): a random one per process would make an unknown identity's made-up phone hint differ "
                "between processes, and so tell it from a registered one"
            )
        if self.sms_sender == "webhook" and not self.sms_webhook_url:
            raise ValueError("QRGATE_SMS_SENDER=webhook needs QRGATE_SMS_WEBHOOK_URL")
        return self

    drain_delay: float = Field(
        0.0, ge=0, le=120, description="On SIGTERM, seconds to keep serving with /readyz failing before closing."
    )
    metrics_port: int = Field(
        9100,
        ge=0,
        le=65535,
        description="The operations port: /metrics, /healthz and /readyz, for the scraper and the probes (0: none). "
        "It answers while the public port is at its connection limit.",
    )
    metrics_public: bool = Field(
        False, description="Also serve /metrics on the public port (otherwise it answers 404 there)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="json: one object per line; text: for humans.")
    trusted_proxies: str = Field(
        "127.0.0.1",
        description="Addresses or networks (CIDR) whose X-Forwarded-For and X-Forwarded-Proto are trusted "
        "(comma-separated, or *).",
    )

    # The HTTP server's own limits (gateway/serving.py): no proxy is needed to survive slow or greedy clients.
    http_max_header_bytes: int = Field(
        16384,
        ge=1024,
        le=1048576,
        description="Largest request head, request line and headers together (bytes); a larger one is answered 431 "
        "and its connection closed.",
    )
    http_header_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="A connection must send a complete request head within this many seconds of opening (on a "
        "kept-alive connection: of the head's first byte), else it is closed (408 if part of a head came).",
    )
    http_body_timeout: float = Field(
        30.0,
        gt=0,
        le=300,
        description="A request body must be complete within this many seconds of its head, else 408 and the "
        "connection is closed. Long-polls and WebSockets are not timed by this (their requests are complete).",
    )
    http_keep_alive_timeout: int = Field(
        5,
        ge=1,
        le=300,
        description="An idle kept-alive connection is closed after this many seconds (a proxy in front should drop "
        "its idle upstream connections sooner).",
    )
    http_max_connections: int = Field(
        10000,
        ge=1,
        description="Open connections on the public port per process, WebSockets and long-polls included; a "
        "connection beyond is answered 503 at once and closed. Kept below the open-files limit (less 256).",
    )

    # Web pages (gateway/web/) ------------------------------------------------------------------------
    demo_app: bool = Field(
        True, description="Serve the phone simulator at /demo/app (a demo tool; never served when production=true)."
    )
    app_download_url: str = Field(
        "",
        max_length=512,
        pattern=r"^(https?://[^\s]+)?$",
        description="Where the mobile app is downloaded: 【手机端下载】 on the login pages shows it as a QR code "
        "(served at /app-download.svg). Empty: the phone simulator (/demo/app) where it is served, else no link.",
    )
    hotline: str = Field(
        "12366",
        pattern=r"^[0-9][0-9-]{2,19}$",
        description="The taxpayer service hotline the login pages name (digits and hyphens).",
    )

    # Browser single sign-on: the OpenID Connect provider (gateway/oidc/, docs/sso.md) ---------------
    sso_session_ttl: int = Field(
        8 * 3600, ge=60, description="How long a browser's sign-in gives single sign-on to further relying parties (s)."
    )
    oidc_request_ttl: int = Field(
        600, ge=30, le=3600, description="How long a browser may take to sign in for one authorization request (s)."
    )
    oidc_code_ttl: int = Field(60, ge=5, le=60, description="Authorization-code lifetime (s); single use.")
    oidc_par_ttl: int = Field(90, ge=10, le=600, description="Lifetime of a pushed authorization request (s).")
    oidc_id_token_ttl: int = Field(600, ge=60, le=3600, description="id_token lifetime (s).")
    oidc_clients_refresh: float = Field(
        2.0,
        ge=0,
        le=60,
        description="Relying parties are re-read from the database at most this often (s): "
        "`qrgate admin client ...` takes effect in every process within it.",
    )
    backchannel_logout_timeout: float = Field(
        5.0, gt=0, le=60, description="Time a relying party's back-channel logout endpoint has to answer (s)."
    )
    backchannel_logout_retries: int = Field(
        5, ge=0, le=20, description="Tries after the first for a back-channel logout, with exponential backoff."
    )
    backchannel_logout_queue_max: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Logout tokens waiting for delivery in the state store, at most; past it a new one is dropped.",
    )
    backchannel_logout_poll: float = Field(
        1.0, gt=0, le=60, description="How often each process looks for logout tokens due for delivery (s)."
    )

    # Units: the unit-verification service (gateway/units/, docs/units.md) ----------------------------
    units_mount: bool = Field(True, description="Mount the unit-verification service at /units in `qrgate serve`.")
    units_gateway_url: str = Field(
        "",
        description="Base URL the units service fetches the gateway's JWKS from ({url}/.well-known/jwks.json). "
        "Empty: public_url (the mounted service). `qrgate serve-units --gateway-url` sets it.",
    )
    units_gateway_issuer: str = Field(
        "", description="`iss` of the gateway's access tokens. Empty: units_gateway_url (or public_url)."
    )
    units_accepted_audiences: str = Field(
        "qrgate-sso,units", description="Audiences of gateway access tokens the units service accepts, comma-separated."
    )
    units_jwks_max_age: float = Field(300.0, gt=0, le=86400, description="Seconds the gateway's JWKS is cached.")
    units_jwks_refetch_cooldown: float = Field(
        10.0, ge=0, le=300, description="A token naming an unknown key refetches the JWKS at most this often (s)."
    )
    units_session_ends_wait: float = Field(
        20.0,
        gt=0,
        le=30,
        description="Seconds each long-poll of the gateway's session-end feed (GET /v1/session-ends) may wait.",
    )
    units_session_ends_max_staleness: float = Field(
        5.0,
        gt=0,
        le=300,
        description="A state-changing unit call asks the gateway's session-end feed first; when the gateway cannot "
        "be reached it acts on the last confirmed view only while it is at most this old (s), else 503.",
    )
    units_keys_file: str = Field(
        "", description="The units service's signing keys (private JWKS). Empty: `units-<name>` beside keys_file."
    )
    units_token_audience: str = Field("qrgate-units", description="`aud` of unit tokens.")
    units_token_ttl: int = Field(
        300, ge=30, le=3600, description="Unit-token lifetime (s); renewable while the session lives."
    )
    units_password_max_failures: int = Field(
        5, ge=1, le=100, description="Wrong declaration passwords before the unit's declaration password locks."
    )
    units_password_lockout_seconds: int = Field(
        7200, ge=1, description="How long a declaration-password lock lasts (s)."
    )
    units_reset_max_auth_age: int = Field(
        600,
        ge=1,
        le=86400,
        description="Resetting a declaration password needs a login (auth_time) at most this old (s).",
    )
    units_authorization_max_days: int = Field(
        1096, ge=1, le=3660, description="Longest authorization a legal representative may grant (days)."
    )
    units_ca_trust_bundle: str = Field(
        "", description="PEM file of the CA certificates trusted for unit certificates; empty disables CA verification."
    )
    units_ca_challenge_ttl: int = Field(120, ge=10, le=600, description="Seconds a CA challenge may be signed (once).")
    units_legacy_cutover: date = Field(
        date(2020, 1, 1),
        description="From this date (00:00 China Standard Time) the legacy logins without a person (CA login, "
        "declaration-password-only login) answer 410.",
    )
    declaration_password_help_url: str = Field(
        "https://etax.chinatax.gov.cn/",
        max_length=2000,
        description="Where a unit's officers reset a forgotten declaration password on the WEB (个人所得税WEB端): "
        "the unit list's 【忘记申报密码】 shows this link and a QR code of it.",
    )

    @property
    def app_download_target(self) -> str:
        """The address behind 【手机端下载】: the setting, else the phone simulator where it is served, else ""."""
        if self.app_download_url:
            return self.app_download_url
        if self.demo_app and not self.production:
            return f"{self.issuer}/demo/app"
        return ""

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
