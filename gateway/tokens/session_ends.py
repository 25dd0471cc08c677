"""The session-end feed: how every resource server learns within seconds that a session has ended.

Whenever a session ends (logout, revocation, refresh-token reuse, `DELETE /v1/sessions/{sid}`, a
password reset, an OpenID Connect logout, and every session made from it), `SessionEndFeed.publish`
(a `SessionManager.on_end` listener) appends the hash of its `sid` to a feed in the state store, so
any gateway process may publish and any may serve. `GET /v1/session-ends?after=<cursor>&wait=<s>`
answers the entries after the cursor as a compact JWS signed with the gateway's access-token key
(`typ: session-ends+jwt`), at once when there are some, else when one is appended or `wait` seconds
have passed (a long-poll). A verifier (qrgate_verify.session_ends) follows it with the JWKS it already
trusts: no shared secret, no per-request call. docs/downstream.md ("Session ends") has the reasoning.

Entries name `base64url(SHA-256(sid))`, never the sid, and say until when they matter (`until`: the
latest expiry of a token of that session); the feed keeps them that long.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors
from gateway.draining import Draining
from gateway.settings import Settings
from gateway.state.base import StateStore
from gateway.tokens import jws
from gateway.tokens.issuer import TokenIssuer

FEED = "session-ends"
FEED_TYP = "session-ends+jwt"
PAGE_LIMIT = 1000  # entries per answer; `more: true` says there are further ones
MAX_WAIT = 30  # s a long-poll may ask for
TOKEN_LEEWAY = 60  # s a verifier may still accept an expired token (qrgate_verify allows 30)
_CURSOR = re.compile(r"[0-9]{1,15}-[0-9]{1,10}", re.ASCII)
_WAIT = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?", re.ASCII)


def sid_hash(sid: str) -> str:
    """How the feed names a session: base64url of the SHA-256 of its id (the verifier hashes alike)."""
    return base64.urlsafe_b64encode(hashlib.sha256(sid.encode()).digest()).rstrip(b"=").decode()


class SessionEndPublisher:
    """Writes ended sessions to the feed (`SessionManager.on_end` listener): all a process that ends
    sessions needs, the gateway or a command such as `qrgate admin client remove`."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self._store = store
        # An entry matters as long as a token of its session may still be accepted: an access token, or
        # a unit token (it carries the session's `sid` too, and may be set to live longer).
        self._retention = max(settings.access_token_ttl, settings.units_token_ttl) + TOKEN_LEEWAY

    async def publish(self, sid: str, session: dict[str, str]) -> None:
        """`SessionManager.on_end` listener: the session `sid` has ended."""
        until = int(time.time()) + self._retention
        await self._store.feed_append(FEED, f"{sid_hash(sid)} {until}", self._retention)


class SessionEndFeed(SessionEndPublisher):
    def __init__(self, settings: Settings, store: StateStore, issuer: TokenIssuer, draining: Draining) -> None:
        super().__init__(settings, store)
        self._settings = settings
        self._issuer = issuer
        self._draining = draining

    async def page(self, after: str, wait: float) -> str:
        """The signed answer: the entries after `after`, waiting up to `wait` s for one."""
        entries, cursor = await self._store.feed_read(FEED, after, PAGE_LIMIT)
        if not entries and wait > 0 and not self._draining.closing.is_set():
            async with self._store.feed_subscribe(FEED) as waiter:
                self._draining.hold(waiter)  # a shutdown answers at once
                try:
                    # Read again once subscribed: an append between the first read and now is not lost.
                    entries, cursor = await self._store.feed_read(FEED, after, PAGE_LIMIT)
                    if not entries:
                        await waiter.wait(wait)
                        entries, cursor = await self._store.feed_read(FEED, after, PAGE_LIMIT)
                finally:
                    self._draining.release(waiter)
        now = int(time.time())
        ends = []
        for _, entry in entries:
            hashed, _, until = entry.partition(" ")
            if until.isdigit() and int(until) > now:
                ends.append({"sid": hashed, "until": int(until)})
        payload: dict[str, Any] = {
            "iss": self._settings.issuer,
            "iat": now,
            "after": after,
            "cursor": cursor,
            "more": len(entries) == PAGE_LIMIT,
            "ends": ends,
        }
        key = self._issuer.ring.signing_key(now)
        return jws.sign({"alg": key.alg, "typ": FEED_TYP, "kid": key.kid}, payload, key)


def routes(feed: SessionEndFeed) -> list[BaseRoute]:
    async def session_ends(request: Request) -> Response:
        after = request.query_params.get("after", "")
        if after and not _CURSOR.fullmatch(after):
            raise errors.BadRequest(
                "after must be a cursor of this feed (`<digits>-<digits>`), or absent.", code="invalid_request"
            )
        raw_wait = request.query_params.get("wait", "0")
        if not _WAIT.fullmatch(raw_wait) or float(raw_wait) > MAX_WAIT:
            raise errors.BadRequest(f"wait must be a number of seconds from 0 to {MAX_WAIT}.", code="invalid_request")
        signed = await feed.page(after, float(raw_wait))
        return Response(signed, media_type="application/jwt", headers={"Cache-Control": "no-store"})

    return [Route("/v1/session-ends", session_ends, methods=["GET"])]
