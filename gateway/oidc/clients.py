"""Relying parties (the OpenID Connect provider's clients) are data: a table managed with
`qrgate admin client add/list/remove`, read through a cache that every process refreshes at most
every `oidc_clients_refresh` seconds, so a change takes effect everywhere without a restart.

A confidential party either has a secret, random and long (the CLI reads it from stdin), stored as
its SHA-256 and compared in constant time as the gateway does for its confidential services, or
authenticates with `private_key_jwt`: it registers its public keys, as a JWKS kept here (`jwks`)
and/or a URI the gateway fetches them from (`jwks_uri`, gateway/oidc/client_keys.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import errors
from gateway.directory.tables import relying_parties
from gateway.tokens.assertions import check_key_set

SCOPES = ("openid", "profile", "phone", "offline_access", "unit")
CLIENT_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
MAX_URI = 2000
MAX_JWKS = 65536  # characters of a registered JWKS


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RelyingParty:
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    scopes: frozenset[str]
    secret_hash: str | None = None  # None: a public client (PKCE alone)
    post_logout_redirect_uris: tuple[str, ...] = ()
    backchannel_logout_uri: str | None = None
    id_token_alg: str | None = None  # "RS256" when registered for it; None: the gateway's signing algorithm
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    jwks: str | None = None  # private_key_jwt: its public JWKS (JSON text), and/or
    jwks_uri: str | None = None  # where to fetch it

    @property
    def uses_keys(self) -> bool:
        """Authenticates with private_key_jwt."""
        return self.jwks is not None or self.jwks_uri is not None

    @property
    def public(self) -> bool:
        return self.secret_hash is None and not self.uses_keys

    @property
    def auth_method(self) -> str:
        """Its `token_endpoint_auth_method` (the secret goes by Basic or in the form alike)."""
        if self.uses_keys:
            return "private_key_jwt"
        return "none" if self.public else "client_secret_basic"

    def secret_matches(self, secret: str) -> bool:
        return self.secret_hash is not None and hmac.compare_digest(self.secret_hash, secret_hash(secret))


class InvalidRelyingParty(errors.BadRequest):
    code = "invalid_client_metadata"


def check_uri(uri: str, *, what: str) -> str:
    """Absolute, no fragment, https (or http to a loopback address, for development: RFC 8252 7.3)."""
    parts = urlsplit(uri)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if len(uri) > MAX_URI or parts.fragment or not parts.netloc or not parts.hostname:
        raise InvalidRelyingParty(f"{what} must be an absolute URI without a fragment: {uri!r}")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise InvalidRelyingParty(f"{what} must use https (http only to localhost): {uri!r}")
    return uri


def new_party(
    client_id: str,
    *,
    name: str,
    redirect_uris: Sequence[str],
    secret: str | None = None,
    post_logout_redirect_uris: Sequence[str] = (),
    backchannel_logout_uri: str | None = None,
    scopes: Sequence[str] = ("openid", "profile", "offline_access"),
    id_token_alg: str | None = None,
    jwks: object = None,
    jwks_uri: str | None = None,
) -> RelyingParty:
    """A relying party from what an administrator typed, every rule checked. `jwks`: the parsed JSON
    of a JWKS (public keys only)."""
    if not (1 <= len(client_id) <= 64 and set(client_id) <= CLIENT_ID_CHARS):
        raise InvalidRelyingParty("A client id is 1-64 letters, digits, '-', '_' or '.'.")
    if not 1 <= len(name.strip()) <= 100:
        raise InvalidRelyingParty("A name (shown on the sign-in page) is 1-100 characters.")
    if not redirect_uris:
        raise InvalidRelyingParty("At least one redirect URI is needed.")
    unknown = set(scopes) - set(SCOPES)
    if unknown or "openid" not in scopes:
        raise InvalidRelyingParty(f"Scopes are among {' '.join(SCOPES)}, openid included.")
    if id_token_alg not in (None, "RS256"):
        raise InvalidRelyingParty("id_tokens are signed with the gateway's key, or with RS256 if asked for.")
    if secret is not None and len(secret) < 32:
        raise InvalidRelyingParty("A client secret has at least 32 characters.")
    if secret is not None and (jwks is not None or jwks_uri):
        raise InvalidRelyingParty("A client has a secret or keys (private_key_jwt), not both.")
    jwks_text = None
    if jwks is not None:
        try:
            check_key_set(jwks)
        except ValueError as exc:
            raise InvalidRelyingParty(f"The JWKS is not usable: {exc}.") from exc
        jwks_text = json.dumps(jwks, separators=(",", ":"))
        if len(jwks_text) > MAX_JWKS:
            raise InvalidRelyingParty(f"A JWKS has at most {MAX_JWKS} characters.")
    return RelyingParty(
        client_id=client_id,
        name=name.strip(),
        redirect_uris=tuple(check_uri(u, what="redirect URI") for u in redirect_uris),
        scopes=frozenset(scopes),
        id_token_alg=id_token_alg,
        secret_hash=secret_hash(secret) if secret is not None else None,
        post_logout_redirect_uris=tuple(
            check_uri(u, what="post-logout redirect URI") for u in post_logout_redirect_uris
        ),
        backchannel_logout_uri=check_uri(backchannel_logout_uri, what="back-channel logout URI")
        if backchannel_logout_uri
        else None,
        jwks=jwks_text,
        jwks_uri=check_uri(jwks_uri, what="JWKS URI") if jwks_uri else None,
    )


def _party(row: sa.Row[tuple[object, ...]]) -> RelyingParty:
    values = row._mapping
    return RelyingParty(
        client_id=str(values["client_id"]),
        name=str(values["name"]),
        redirect_uris=tuple(json.loads(str(values["redirect_uris"]))),
        scopes=frozenset(str(values["scopes"]).split()),
        secret_hash=str(values["secret_hash"]) if values["secret_hash"] else None,
        post_logout_redirect_uris=tuple(json.loads(str(values["post_logout_redirect_uris"]))),
        backchannel_logout_uri=str(values["backchannel_logout_uri"]) if values["backchannel_logout_uri"] else None,
        id_token_alg=str(values["id_token_alg"]) if values["id_token_alg"] else None,
        created_at=values["created_at"],
        jwks=str(values["jwks"]) if values["jwks"] else None,
        jwks_uri=str(values["jwks_uri"]) if values["jwks_uri"] else None,
    )


class RelyingParties:
    def __init__(self, engine: AsyncEngine, *, refresh: float = 2.0) -> None:
        self._engine = engine
        self._refresh = refresh
        self._cache: dict[str, RelyingParty] = {}
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()

    async def get(self, client_id: str) -> RelyingParty | None:
        if time.monotonic() - self._read_at >= self._refresh:
            async with self._lock:  # one reader refreshes for every concurrent caller
                if time.monotonic() - self._read_at >= self._refresh:
                    self._cache = {party.client_id: party for party in await self.all()}
                    self._read_at = time.monotonic()
        return self._cache.get(client_id)

    async def all(self) -> list[RelyingParty]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(relying_parties).order_by(relying_parties.c.client_id))).all()
        return [_party(row) for row in rows]

    async def add(self, party: RelyingParty) -> None:
        """Add or replace (the client id is the key)."""
        values = {
            "client_id": party.client_id,
            "name": party.name,
            "secret_hash": party.secret_hash,
            "redirect_uris": json.dumps(list(party.redirect_uris)),
            "post_logout_redirect_uris": json.dumps(list(party.post_logout_redirect_uris)),
            "backchannel_logout_uri": party.backchannel_logout_uri,
            "scopes": " ".join(sorted(party.scopes)),
            "id_token_alg": party.id_token_alg,
            "created_at": party.created_at,
            "jwks": party.jwks,
            "jwks_uri": party.jwks_uri,
        }
        async with self._engine.begin() as conn:
            await conn.execute(sa.delete(relying_parties).where(relying_parties.c.client_id == party.client_id))
            await conn.execute(sa.insert(relying_parties).values(**values))
        self._read_at = -float("inf")

    async def remove(self, client_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.delete(relying_parties).where(relying_parties.c.client_id == client_id))
        self._read_at = -float("inf")
        return bool(result.rowcount)
