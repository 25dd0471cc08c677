"""Follow the gateway's session-end feed, so a token of an ended session is refused within seconds.

    ends = SessionEnds(f"{GATEWAY}/v1/session-ends", RemoteJwks(f"{GATEWAY}/.well-known/jwks.json"),
                       issuer=GATEWAY)
    await ends.start()                         # in your app's startup; `await ends.aclose()` at shutdown
    await ends.check(claims["sid"])            # SessionEnded (401) if the gateway has ended it
    await ends.check(claims["sid"], fresh=True)   # before a state-changing call: asks the gateway now

A background task long-polls `GET /v1/session-ends?after=<cursor>&wait=<s>`; each answer is a JWS the
gateway signs with its access-token key (`typ: session-ends+jwt`), checked against the JWKS this
service already trusts, so there is no shared secret and no call per request. The entries
(`base64url(SHA-256(sid))`, and until when they matter) are kept in memory until then.

`check(sid, fresh=True)` first fetches whatever was appended since the cursor (one request, shared by
every caller that asked before it started). If the gateway cannot be reached, the last confirmed view
is used while it is at most `max_staleness` seconds old; after that the answer is 503
`session_status_unavailable` (fail closed). Plain `check(sid)` always answers from the view it has.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import time
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError

from qrgate_verify.problem import Problem, Unauthorized
from qrgate_verify.verifier import DEFAULT_ALGORITHMS, InvalidToken, KeySource, unverified_header

FEED_TYP = "session-ends+jwt"
log = logging.getLogger("qrgate_verify.session_ends")


class SessionEnded(Unauthorized):
    code = "session_ended"


class SessionStatusUnavailable(Problem):
    status = 503
    code = "session_status_unavailable"
    title = "Service unavailable"


class FeedError(Exception):
    """The feed could not be read, or its answer is not one the gateway signed for this request."""


def sid_hash(sid: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(sid.encode()).digest()).rstrip(b"=").decode()


def _order(cursor: str) -> tuple[int, int]:
    ms, _, n = cursor.partition("-")
    return (int(ms), int(n or 0)) if ms.isdigit() and (not n or n.isdigit()) else (-1, -1)


class SessionEnds:
    def __init__(
        self,
        url: str,
        keys: KeySource,
        *,
        issuer: str,
        client: httpx.AsyncClient | None = None,
        wait: float = 20.0,
        max_staleness: float = 5.0,
        fresh_timeout: float = 2.0,
        min_interval: float = 0.25,
        algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
    ) -> None:
        self.url = url
        self._keys = keys
        self._issuer = issuer
        self._client = client
        self._owns_client = client is None
        self._wait = wait
        self._max_staleness = max_staleness
        self._fresh_timeout = fresh_timeout
        self._min_interval = min_interval
        self._algorithms = list(algorithms)
        self._ended: dict[str, int] = {}  # sid hash -> until (epoch s)
        self._cursor = ""
        self._swept_at = 0.0
        self._confirmed_at = float("-inf")  # monotonic: the view was complete at this moment
        self._follower: asyncio.Task[None] | None = None
        self._current: asyncio.Future[Any] | None = None  # the fresh fetch in flight
        self._next: asyncio.Future[Any] | None = None  # the one queued behind it, for later askers

    # Life cycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start following the feed (the first answer may come after the server starts listening)."""
        if self._follower is None:
            self._follower = asyncio.create_task(self._follow(), name="qrgate-session-ends")

    async def aclose(self) -> None:
        for task in (self._follower, self._current, self._next):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._follower = self._current = self._next = None
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # Asking --------------------------------------------------------------------------------------------
    @property
    def staleness(self) -> float:
        """Seconds since the view was last confirmed complete (inf before the first answer)."""
        return time.monotonic() - self._confirmed_at

    def ended(self, sid: str) -> bool:
        """Whether the view has the session as ended (no I/O)."""
        until = self._ended.get(sid_hash(sid))
        return until is not None and until > time.time()

    async def check(self, sid: str, *, fresh: bool = False) -> None:
        """Raise SessionEnded (401) if the session has ended; with `fresh`, ask the gateway first, and
        raise SessionStatusUnavailable (503) when it cannot say and the view is too old."""
        if fresh:
            try:
                await self.sync()
            except FeedError as exc:
                if self.staleness > self._max_staleness:
                    raise SessionStatusUnavailable(
                        "Whether your session is still valid cannot be checked with the login gateway right now; "
                        "try again shortly.",
                        headers={"Retry-After": "2"},
                    ) from exc
                log.warning("session-end feed unreachable (%s); acting on a view %.1f s old", exc, self.staleness)
        if self.ended(sid):
            raise SessionEnded("The session of this access token has ended.")

    async def sync(self) -> None:
        """Bring the view up to date now: one request, shared by every caller that asked before it
        started. Raises FeedError if it fails."""
        loop = asyncio.get_running_loop()
        if self._current is None or self._current.done():
            self._current = loop.create_task(self._fetch(0.0, self._fresh_timeout))
            await asyncio.shield(self._current)
            return
        if self._next is None or self._next.done():
            self._next = loop.create_task(self._after(self._current))
        await asyncio.shield(self._next)

    async def _after(self, previous: asyncio.Future[Any]) -> bool:
        await asyncio.wait([previous])
        self._current, self._next = self._next, None  # later askers queue behind this one
        return await self._fetch(0.0, self._fresh_timeout)

    # The feed ------------------------------------------------------------------------------------------
    async def _follow(self) -> None:
        backoff = 0.5
        while True:
            started = time.monotonic()
            try:
                more = await self._fetch(self._wait, self._wait + 10.0)
                backoff = 0.5
            except FeedError as exc:
                log.warning("session-end feed: %s; again in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if not more:
                await asyncio.sleep(max(0.0, self._min_interval - (time.monotonic() - started)))

    async def _fetch(self, wait: float, timeout: float) -> bool:
        """One request from the cursor; applies the answer. True if the gateway has more at once."""
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        after = self._cursor
        started = time.monotonic()
        params = {"after": after, "wait": f"{wait:g}"} if after else {"wait": f"{wait:g}"}
        try:
            response = await self._client.get(self.url, params=params, timeout=timeout)
        except httpx.HTTPError as exc:
            raise FeedError(f"cannot reach {self.url}: {exc.__class__.__name__}") from exc
        if response.status_code != 200:
            raise FeedError(f"{self.url} answered {response.status_code}")
        page = await self._verified(response.text, after)
        for end in page["ends"]:
            self._ended[str(end["sid"])] = int(end["until"])
        if _order(str(page["cursor"])) > _order(self._cursor):
            self._cursor = str(page["cursor"])
        # A long-poll's answer is the gateway's view when it answered; a quick one's, when it was asked.
        self._confirmed_at = max(self._confirmed_at, time.monotonic() if wait else started)
        self._forget_expired()
        return bool(page.get("more"))

    async def _verified(self, signed: str, after: str) -> dict[str, Any]:
        try:
            header = unverified_header(signed)
            if header.get("typ") != FEED_TYP or header.get("alg") not in self._algorithms:
                raise FeedError("the answer is not a session-end feed page")
            kid = header.get("kid")
            keyset = await self._keys.keys()
            if kid not in {str(key.kid) for key in keyset.keys}:
                keyset = await self._keys.keys(refresh_for_kid=str(kid))
            claims: dict[str, Any] = jwt.decode(signed, keyset, algorithms=self._algorithms).claims
        except (InvalidToken, JoseError, ValueError, Problem) as exc:
            raise FeedError(f"the answer's signature cannot be verified ({exc.__class__.__name__})") from exc
        if claims.get("iss") != self._issuer or claims.get("after") != after:
            raise FeedError("the answer is for another issuer or another request")
        ends = claims.get("ends")
        if not isinstance(ends, list) or not isinstance(claims.get("cursor"), str):
            raise FeedError("the answer is malformed")
        for end in ends:
            if not (isinstance(end, dict) and isinstance(end.get("sid"), str) and isinstance(end.get("until"), int)):
                raise FeedError("the answer is malformed")
        return claims

    def _forget_expired(self) -> None:
        now = time.time()
        if now - self._swept_at < 30.0:
            return
        self._swept_at = now
        self._ended = {hashed: until for hashed, until in self._ended.items() if until > now}
