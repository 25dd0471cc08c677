"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0): when a relying party's session ends,
however it ends (RP-initiated logout, `DELETE /v1/sessions/{sid}` of the browser session or of the
relying party's own, `POST /v1/logout`, revocation, refresh-token reuse), the relying party is told
by a signed logout token POSTed to its `backchannel_logout_uri`.

`BackchannelSender.session_ended` is a `SessionManager.on_end` listener. It only starts a task: the
request that ended the session never waits for a relying party, nor for the database read that finds
its URI. A delivery is tried again on network errors and 5xx answers, with exponential backoff, up to
`backchannel_logout_retries` times, then given up and logged; a 4xx means the relying party refused
the token, and asking again would not change its mind. Deliveries still pending at shutdown are
cancelled (`close`): a logout token is a courtesy to the relying party, whose own session times out
anyway, so it is not worth holding a shutdown for.

One token per relying-party session: a browser that signed in to the same relying party twice (two
codes) has two sessions there, and that party gets two tokens with the same `sid`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from gateway import logs, metrics
from gateway.oidc import id_tokens
from gateway.oidc.clients import RelyingParties
from gateway.settings import Settings
from gateway.tokens.keys import KeyRing

MAX_PENDING = 10_000  # deliveries in flight per process; past it a new one is dropped (and counted)


@dataclass(frozen=True, slots=True)
class DoublingBackoff:
    """The wait before try `failures + 1`, the shape of `redis.backoff.EqualJitterBackoff`: `first`
    doubling up to `cap`, each wait drawn between half and all of that, so the deliveries of a
    person's many sessions, ended together, do not all come back to a recovering party at once."""

    first: float = 1.0
    cap: float = 60.0

    def compute(self, failures: int) -> float:
        full = min(self.cap, self.first * 2.0 ** max(0, failures - 1))
        return full / 2 + random.uniform(0, full / 2)  # noqa: S311 (jitter, not a secret)

    def reset(self) -> None:
        """Stateless (the Backoff protocol of gateway/state/redis_clients.py has it)."""


class BackchannelSender:
    def __init__(
        self,
        settings: Settings,
        parties: RelyingParties,
        ring: Callable[[], KeyRing],
        *,
        backoff: DoublingBackoff | None = None,
    ) -> None:
        self._issuer = settings.issuer
        self._retries = settings.backchannel_logout_retries
        self._timeout = settings.backchannel_logout_timeout
        self._parties = parties
        self._ring = ring
        self.backoff = backoff or DoublingBackoff()
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def session_ended(self, sid: str, session: dict[str, str]) -> None:
        """The `SessionManager.on_end` listener. Only a session made from a browser session (`parent`)
        can be a relying party's; the gateway's own sessions (desktop, app) have none."""
        parent = session.get("parent", "")
        if not parent or self._closed:
            return
        if len(self._tasks) >= MAX_PENDING:
            self._record("dropped", client_id=session["client_id"])
            return
        task = asyncio.create_task(self._deliver(session["client_id"], session["sub"], parent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait for every delivery in flight (tests, and anyone who must know they are done)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel what is pending (counted as `abandoned`) and close the HTTP client."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:  # made in the running loop, on first use
            self._http = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        return self._http

    async def _deliver(self, client_id: str, subject: str, browser_sid: str) -> None:
        outcome, tries, status = "failed", 0, None
        try:
            party = await self._parties.get(client_id)
            if party is None or not party.backchannel_logout_uri:
                return  # not a relying party, or one that takes no logout tokens
            while True:
                tries += 1
                status = await self._post(party.backchannel_logout_uri, client_id, subject, browser_sid)
                if status is not None and status < 300:
                    outcome = "delivered"
                    return
                if status is not None and status < 500:  # refused; redirects are not followed either
                    outcome = "refused"
                    return
                if tries > self._retries:
                    return
                await asyncio.sleep(self.backoff.compute(tries))
        except asyncio.CancelledError:
            outcome = "abandoned"
            raise
        except Exception as exc:  # a background task: what failed is logged, never raised into nowhere
            logs.events.warning("backchannel_logout_error", extra={"client_id": client_id, "error": repr(exc)})
        finally:
            if tries or outcome == "abandoned":
                self._record(outcome, client_id=client_id, tries=tries, status=status)

    async def _post(self, uri: str, client_id: str, subject: str, browser_sid: str) -> int | None:
        """One try: the answer's status, None when there was none (a network error or the timeout).
        Each try carries a token signed for it, so a late retry is not refused as expired."""
        token = id_tokens.logout_token(
            self._ring(), issuer=self._issuer, subject=subject, client_id=client_id, session_id=browser_sid
        )
        try:
            answer = await self._client().post(uri, data={"logout_token": token})
        except httpx.HTTPError:
            return None
        return answer.status_code

    @staticmethod
    def _record(outcome: str, **fields: object) -> None:
        metrics.labelled(metrics.BACKCHANNEL_LOGOUTS, outcome).inc()
        if outcome == "delivered":
            logs.event("backchannel_logout", outcome=outcome, **fields)
        else:  # given up, refused or abandoned: the relying party still believes the session alive
            extra = {"event": "backchannel_logout", "outcome": outcome, **fields}
            logs.events.warning("backchannel_logout", extra=extra)
