"""Refresh sessions: one per login (`sid`), rotated on every use, revoked as a whole on reuse.

A refresh token is `<sid>.<secret>`: the store keeps only the secret's hash, as the session's
current one, and the hashes of spent ones. Presenting the current token rotates it (one atomic store
operation); presenting a spent one means two parties hold the chain, so the session dies for both
(OAuth 2.0 Security BCP, section 4.14). There is no grace window: a client that lost the answer to
a refresh must log in again, which the desktop does by showing a new QR code.

Each session lives until its idle deadline (extended by every refresh) or its absolute deadline,
whichever comes first. A person's session ids are indexed so they can be listed and ended together.

Lineage: a session made from another (a relying party's session from the browser's single sign-on
session) names it as `parent`, and ending a session ends its children, and theirs. Whoever must know
when a session ends (the OpenID provider, to send back-channel logout tokens) registers a listener.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import errors, logs, metrics
from gateway.jsonutil import dumps, loads
from gateway.settings import Settings
from gateway.state import keys
from gateway.state.base import StateStore
from gateway.tokens.claims import TokenResponse
from gateway.tokens.issuer import TokenIssuer

log = logging.getLogger("qrgate")


class InvalidGrant(errors.BadRequest):
    code = "invalid_grant"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _extra_claims(session: Mapping[str, str], client_scope: str) -> dict[str, Any] | None:
    """What a session's access tokens carry beyond the standard claims: its `scope` (the one it was
    started with, else what its client is allowed: QRGATE_CLIENT_SCOPES) and its `claims`."""
    extra: dict[str, Any] = loads(session["claims"]) if session.get("claims") else {}
    scope = session.get("scope") or client_scope
    if scope:
        extra["scope"] = scope
    return extra or None


def split_refresh_token(token: str) -> tuple[str, str] | None:
    sid, dot, secret = token.partition(".")
    if not dot or not 16 <= len(sid) <= 64 or not 32 <= len(secret) <= 128:
        return None
    return sid, secret


@dataclass(frozen=True, slots=True)
class SessionInfo:
    sid: str
    client_id: str
    device_name: str
    amr: list[str]
    created_at: int
    last_used: int


Ended = Callable[[str, dict[str, str]], Awaitable[None]]  # (sid, the session as it was)


class SessionManager:
    """`issuer`: None for a manager that only lists and ends sessions (the admin commands, which have
    no business with the signing keys)."""

    def __init__(self, settings: Settings, store: StateStore, issuer: TokenIssuer | None) -> None:
        self._settings = settings
        self._store = store
        self._issuer = issuer
        self._listeners: list[Ended] = []
        self._client_scopes = {client: " ".join(scopes) for client, scopes in settings.client_scopes.items()}

    def _index(self, subject: str) -> str:
        return keys.key(keys.Space.PERSON_SESSIONS, subject)

    def _children(self, sid: str) -> str:
        return keys.key(keys.Space.SESSION_CHILDREN, sid)

    def on_end(self, listener: Ended) -> None:
        """Call `listener` for every session that ends through `end` (its children included)."""
        self._listeners.append(listener)

    async def start(
        self,
        *,
        subject: str,
        client_id: str,
        amr: Sequence[str],
        device_name: str = "",
        jkt: str | None = None,
        roles: Sequence[str] = (),
        display_name: str = "",
        auth_time: int | None = None,
        parent: str | None = None,
        scope: str = "",
        claims: Mapping[str, Any] | None = None,
    ) -> TokenResponse:
        """One login = one session with its first refresh token. `display_name` is the person's
        masked name (shown on a desktop this session's phone scans), kept so a scan needs no
        directory read. `auth_time`: when the person authenticated, if not now (single sign-on);
        `parent`: the session this one is made from; `scope`: carried by its access tokens;
        `claims`: more claims all its access tokens carry (a relying party's `unit`), kept as JSON."""
        now = int(time.time())
        sid = secrets.token_urlsafe(16)
        secret = secrets.token_urlsafe(32)
        absolute = self._settings.refresh_token_ttl
        session = {
            "sub": subject,
            "client_id": client_id,
            "amr": " ".join(amr),
            "device_name": device_name,
            "jkt": jkt or "",
            "roles": " ".join(roles),
            "display_name": display_name,
            "created_at": str(now),
            "auth_time": str(now if auth_time is None else auth_time),
            "parent": parent or "",
            "scope": scope,
            "claims": dumps(dict(claims)).decode() if claims else "",
            "last_used": str(now),
            "expires_at": str(now + absolute),
            "refresh_hash": _hash(secret),
        }
        writes = [
            self._store.create_session(sid, session, min(absolute, self._settings.session_idle_ttl)),
            self._store.add_member(self._index(subject), sid, absolute),
        ]
        if parent:
            writes.append(self._store.add_member(self._children(parent), sid, absolute))
        await asyncio.gather(*writes)  # independent writes: one round trip
        metrics.labelled(metrics.TOKENS_ISSUED, "+".join(amr) or "login").inc()
        return self._response(sid, session, f"{sid}.{secret}", now)

    def _response(self, sid: str, session: dict[str, str], refresh_token: str, now: int) -> TokenResponse:
        if self._issuer is None:
            raise RuntimeError("This session manager cannot issue tokens (it was made without an issuer).")
        jkt = session["jkt"] or None
        access = self._issuer.access_token(
            subject=session["sub"],
            client_id=session["client_id"],
            session_id=sid,
            amr=session["amr"].split(),
            auth_time=int(session["auth_time"]),
            jkt=jkt,
            roles=session["roles"].split(),
            extra=_extra_claims(session, self._client_scopes.get(session["client_id"], "")),
            now=now,
        )
        return {
            "access_token": access,
            "token_type": "DPoP" if jkt else "Bearer",
            "expires_in": self._settings.access_token_ttl,
            "refresh_token": refresh_token,
        }

    async def peek(self, refresh_token: str) -> tuple[str, dict[str, str]] | None:
        """The session a refresh token names, if the token is its current one (changes nothing)."""
        parts = split_refresh_token(refresh_token)
        if parts is None:
            return None
        sid, secret = parts
        session = await self._store.get_session(sid)
        if session is None or not secrets.compare_digest(session["refresh_hash"], _hash(secret)):
            return None
        return sid, session

    async def refresh(
        self, refresh_token: str, *, client_id: str, prove_key: Callable[[str], Awaitable[None]] | None = None
    ) -> TokenResponse:
        """Rotate. A session bound to a key (DPoP) is refreshed only after `prove_key(jkt)` returned."""
        parts = split_refresh_token(refresh_token)
        if parts is None:
            raise InvalidGrant("The refresh token is malformed.", error="invalid_grant")
        sid, secret = parts
        session = await self._store.get_session(sid)
        if session is not None and session["client_id"] != client_id:
            raise InvalidGrant("The refresh token was issued to another client.", error="invalid_grant")
        if session is not None and session["jkt"] and secrets.compare_digest(session["refresh_hash"], _hash(secret)):
            if prove_key is None:
                raise InvalidGrant("This session is bound to a key: a DPoP proof is required.", error="invalid_grant")
            await prove_key(session["jkt"])
        now = int(time.time())
        new_secret = secrets.token_urlsafe(32)
        ttl = self._ttl(session, now) if session is not None else 1
        outcome, rotated = await self._store.rotate_refresh(sid, _hash(secret), _hash(new_secret), now, ttl)
        metrics.labelled(metrics.REFRESHES, outcome if rotated is not None or outcome == "reused" else "invalid").inc()
        if outcome == "reused":
            logs.event("refresh_token_reused", sid_hash=_hash(sid)[:12])
            await self._ended(sid, session)  # the store deleted it; what was made from it goes too
            raise InvalidGrant(
                "This refresh token was already used; the session has been ended for safety. Log in again.",
                error="invalid_grant",
                code="refresh_token_reused",
            )
        if rotated is None:
            raise InvalidGrant("The refresh token is not valid or the session has ended.", error="invalid_grant")
        return self._response(sid, rotated, f"{sid}.{new_secret}", now)

    def _ttl(self, session: dict[str, str], now: int) -> int:
        return max(1, min(self._settings.session_idle_ttl, int(session["expires_at"]) - now))

    async def alive(self, sid: str) -> dict[str, str] | None:
        return await self._store.get_session(sid)

    async def end(self, sid: str) -> bool:
        """End the session and every session made from it; True if it was alive."""
        session = await self._store.get_session(sid)
        ended = await self._store.end_session(sid)
        await self._ended(sid, session)
        return ended

    async def _ended(self, sid: str, session: dict[str, str] | None) -> None:
        """What follows a session's end, whoever ended it: the index, the listeners, the children."""
        if session is not None:
            await self._store.remove_member(self._index(session["sub"]), sid)
            for listener in self._listeners:
                # Each on its own: one that fails (the feed's store node down, say) must not keep the
                # others (a relying party's logout token) or the children's ends from happening, and
                # the session is already ended, so nothing would run them later.
                try:
                    await listener(sid, session)
                except Exception as exc:
                    name = getattr(listener, "__qualname__", "a listener")
                    log.error("after a session ended, %s failed: %s", name, exc.__class__.__name__)
        for child in sorted(await self._store.members(self._children(sid))):
            await self._store.remove_member(self._children(sid), child)
            await self.end(child)

    async def list_of(self, subject: str) -> list[SessionInfo]:
        result = []
        for sid in sorted(await self._store.members(self._index(subject))):
            session = await self._store.get_session(sid)
            if session is None or session["sub"] != subject:
                await self._store.remove_member(self._index(subject), sid)
                continue
            result.append(
                SessionInfo(
                    sid=sid,
                    client_id=session["client_id"],
                    device_name=session["device_name"],
                    amr=session["amr"].split(),
                    created_at=int(session["created_at"]),
                    last_used=int(float(session["last_used"])),
                )
            )
        return sorted(result, key=lambda s: s.created_at)

    async def end_sessions_of(self, subject: str) -> int:
        """End every session of a person (password reset, account closure). Returns how many."""
        ended = 0
        for sid in await self._store.members(self._index(subject)):
            session = await self._store.get_session(sid)
            if session is not None and session["sub"] == subject:
                ended += await self.end(sid)
            await self._store.remove_member(self._index(subject), sid)
        return ended
