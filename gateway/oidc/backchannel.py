"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0): when a relying party's session ends,
however it ends (RP-initiated logout, `DELETE /v1/sessions/{sid}` of the browser session or of the
relying party's own, `POST /v1/logout`, revocation, refresh-token reuse), the relying party is told
by a signed logout token POSTed to its `backchannel_logout_uri`.

Durable delivery. `BackchannelSender.session_ended`, a `SessionManager.on_end` listener, only queues
the delivery in the state store (one write; the item is keyed by the relying party's session id, so a
session is announced once) and wakes this process's worker: the request that ended the session never
waits for a relying party. Every gateway process runs a worker (`start`) that claims due items
(`StateStore.claim_due`, atomic: of competing processes one gets each item) and delivers them. A claim
is a lease: an item whose process dies with it (kill -9) is due again `lease` seconds later, for any
process; one whose process shuts down (SIGTERM) is handed back at once (`close`). So a logout token
survives restarts and crashes as long as the store does (Redis; the memory store is the process's own).
Delivery is at least once: a process that dies after the relying party answered but before it removed
the item leaves it to be delivered again (with a new `jti`; the relying party ends the `sid` twice).

Retries. A network error or a 5xx answer puts the item back with exponential backoff, up to
`backchannel_logout_retries` times, then it is given up (`failed`, logged); a 4xx means the relying
party refused the token, and asking again would not change its mind (`refused`). The queue holds at
most `backchannel_logout_queue_max` items: past that a new one is `dropped` (counted and logged), as a
stuck relying party must not fill the store. Each try carries a token signed for it (a new `jti`, a
fresh `exp`). A relying party removed meanwhile, or one without a back-channel URI, gets nothing.

One token per relying-party session: a browser that signed in to the same relying party twice (two
codes) has two sessions there, and that party gets two tokens with the same `sid`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from gateway import logs, metrics
from gateway.jsonutil import dumps, loads
from gateway.oidc import id_tokens
from gateway.oidc.clients import RelyingParties
from gateway.settings import Settings
from gateway.state import keys
from gateway.state.base import StateStore, StoreUnavailable
from gateway.tokens.keys import KeyRing

QUEUE = keys.key(keys.Space.BACKCHANNEL_QUEUE)
QUEUE_TTL = 7 * 86400  # s the queue outlives the last item added (an item normally leaves within minutes)
IN_FLIGHT = 32  # deliveries one process makes at a time


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
        store: StateStore,
        parties: RelyingParties,
        ring: Callable[[], KeyRing],
        *,
        backoff: DoublingBackoff | None = None,
    ) -> None:
        self._issuer = settings.issuer
        self._retries = settings.backchannel_logout_retries
        self._timeout = settings.backchannel_logout_timeout
        self._limit = settings.backchannel_logout_queue_max
        self._poll = settings.backchannel_logout_poll
        self.lease = 2 * settings.backchannel_logout_timeout + 5  # longer than a try can take
        self._store = store
        self._parties = parties
        self._ring = ring
        self.backoff = backoff or DoublingBackoff()
        self._http: httpx.AsyncClient | None = None
        self._deliveries: dict[str, tuple[str, asyncio.Task[None]]] = {}  # item id -> (payload, task)
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    async def session_ended(self, sid: str, session: dict[str, str]) -> None:
        """The `SessionManager.on_end` listener. Only a session made from a browser session (`parent`)
        can be a relying party's; the gateway's own sessions (desktop, app) have none."""
        parent = session.get("parent", "")
        if not parent:
            return
        item = {"client_id": session["client_id"], "sub": session["sub"], "sid": parent, "tries": 0}
        payload = dumps(item).decode()
        if not await self._store.enqueue(QUEUE, sid, payload, time.time(), limit=self._limit, ttl=QUEUE_TTL):
            self._record("dropped", client_id=session["client_id"])
            return
        self._wake.set()

    def start(self) -> None:
        """Run this process's worker (in the running loop)."""
        if self._worker is None and not self._closed:
            self._worker = asyncio.create_task(self._work(), name="backchannel-logout-worker")

    async def settled(self) -> None:
        """Wait until the queue is empty and nothing is in flight here (tests, and anyone who must know
        the deliveries are done)."""
        while True:
            self._wake.set()
            await asyncio.gather(*[task for _, task in self._deliveries.values()], return_exceptions=True)
            if not self._deliveries and await self._store.queued(QUEUE) == 0:
                return
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop the worker; deliveries in flight are cancelled and handed back to the queue, due now,
        for whichever process runs next."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        interrupted = dict(self._deliveries)
        for _, task in interrupted.values():
            task.cancel()
        await asyncio.gather(*[task for _, task in interrupted.values()], return_exceptions=True)
        for item_id, (payload, _) in interrupted.items():
            with contextlib.suppress(StoreUnavailable):  # then the lease runs out instead
                await self._store.reschedule(QUEUE, item_id, payload, time.time())
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _work(self) -> None:
        while not self._closed:
            self._wake.clear()
            room = IN_FLIGHT - len(self._deliveries)
            claimed: list[tuple[str, str]] = []
            if room > 0:
                try:
                    claimed = await self._store.claim_due(QUEUE, time.time(), self.lease, room)
                except StoreUnavailable:
                    pass  # the store is back on a later round; the items wait there
                except Exception as exc:  # the worker must outlive any one bad round
                    logs.events.warning("backchannel_logout_error", extra={"error": repr(exc)})
            for item_id, payload in claimed:
                task = asyncio.create_task(self._deliver(item_id, payload))
                self._deliveries[item_id] = (payload, task)
                task.add_done_callback(self._forget(item_id))
            if claimed and len(claimed) == room:
                continue  # there may be more due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    def _forget(self, item_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            if self._deliveries.get(item_id, ("", None))[1] is task:  # not a later claim of the same item
                del self._deliveries[item_id]

        return done

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:  # made in the running loop, on first use
            self._http = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        return self._http

    async def _deliver(self, item_id: str, payload: str) -> None:
        client_id = "?"
        try:
            item = loads(payload)
            client_id = item["client_id"]
            party = await self._parties.get(client_id)
            if party is None or not party.backchannel_logout_uri:
                await self._store.finish(QUEUE, item_id)  # not (or no longer) a relying party, or no URI
                return
            tries = int(item["tries"]) + 1
            status = await self._post(party.backchannel_logout_uri, client_id, item["sub"], item["sid"])
            outcome = None
            if status is not None and status < 300:
                outcome = "delivered"
            elif status is not None and status < 500:  # refused; redirects are not followed either
                outcome = "refused"
            elif tries > self._retries:
                outcome = "failed"
            if outcome is None:
                retry = dumps({**item, "tries": tries}).decode()
                await self._store.reschedule(QUEUE, item_id, retry, time.time() + self.backoff.compute(tries))
                return
            await self._store.finish(QUEUE, item_id)
            self._record(outcome, client_id=client_id, tries=tries, status=status)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a background task: what failed is logged, never raised into nowhere
            # (the item stays claimed: its lease runs out and it is tried again)
            logs.events.warning("backchannel_logout_error", extra={"client_id": client_id, "error": repr(exc)})

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
        else:  # given up, refused or dropped: the relying party still believes the session alive
            extra = {"event": "backchannel_logout", "outcome": outcome, **fields}
            logs.events.warning("backchannel_logout", extra=extra)
