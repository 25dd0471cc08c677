"""The ephemeral state store: what both the memory and the Redis store promise.

Everything here may expire, and every key has a TTL. The store is the single source of truth for
QR sessions, counters and refresh sessions; its wake-up channel only tells local waiters "read
again", so a lost wake-up costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Literal, Protocol

from gateway import errors
from gateway.state import attempts
from gateway.state.updates import ConditionalUpdate

RotateOutcome = Literal["rotated", "reused", "unknown"]
LiveOutcome = Literal["reserved", "group_full", "store_full"]


class StoreUnavailable(errors.ServiceUnavailable):
    code = "store_unavailable"


class Waiter:
    """One local listener on one QR session's wake-up channel (a coalescing queue of size one)."""

    __slots__ = ("_event", "_woken")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._woken = False

    def wake(self) -> None:
        self._woken = True
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait for a wake-up; False on timeout. A wake-up that came earlier is not lost."""
        if not self._woken:
            # A timer that only sets the event, not asyncio.timeout or wait_for: this runs twice per
            # login, and cancelling the waiting task (a client gone, a shutdown) simply propagates.
            timer = asyncio.get_running_loop().call_later(max(0.0, timeout), self._event.set)
            try:
                await self._event.wait()
            finally:
                timer.cancel()
        woken, self._woken = self._woken, False
        self._event.clear()
        return woken


class LocalWaiters:
    """This process's waiters, by channel. Waking never blocks: a slow client cannot stall fan-out."""

    def __init__(self) -> None:
        self._by_channel: dict[str, set[Waiter]] = {}

    def __len__(self) -> int:
        return sum(len(group) for group in self._by_channel.values())

    def channels(self) -> list[str]:
        return list(self._by_channel)

    def add(self, channel: str, waiter: Waiter) -> bool:
        """Register; True when this is the channel's first local waiter."""
        group = self._by_channel.setdefault(channel, set())
        group.add(waiter)
        return len(group) == 1

    def remove(self, channel: str, waiter: Waiter) -> bool:
        """Unregister; True when the channel has no local waiter left."""
        group = self._by_channel.get(channel)
        if group is None:
            return False
        group.discard(waiter)
        if group:
            return False
        del self._by_channel[channel]
        return True

    def wake(self, channel: str) -> None:
        for waiter in self._by_channel.get(channel, ()):
            waiter.wake()

    def wake_all(self) -> None:
        for group in self._by_channel.values():
            for waiter in group:
                waiter.wake()


class StateStore(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""

    # QR sessions -----------------------------------------------------------------------------
    async def create_qr(self, qr_id: str, record: Mapping[str, str], ttl: int) -> None: ...

    async def get_qr(self, qr_id: str) -> dict[str, str] | None: ...

    async def transition_qr(
        self, qr_id: str, update: ConditionalUpdate, now: float
    ) -> tuple[bool, dict[str, str] | None]:
        """Apply `update` atomically. (True, record after) or (False, record as it is, None if absent).
        A successful transition wakes the QR's waiters in every process."""

    def subscribe(self, qr_id: str) -> AbstractAsyncContextManager[Waiter]:
        """Async context manager: a waiter on the QR's wake-up channel, registered on entry."""

    async def reserve_live(
        self, group: str, member: str, expires_at: float, now: float, *, group_max: int, total_max: int
    ) -> LiveOutcome:
        """One atomic step: forget the live entries whose `expires_at` has passed, then count `member`
        as live (in the store's set of live entries and in `group`'s) unless the store already holds
        `total_max` ("store_full") or the group `group_max` ("group_full"). Reserving a member that is
        already live answers "reserved" again (a repeat after a lost reply)."""

    async def release_live(self, group: str, member: str) -> None:
        """No longer live (finished before it expired); harmless to repeat."""

    # Refresh sessions ------------------------------------------------------------------------------
    async def create_session(self, sid: str, session: Mapping[str, str], ttl: int) -> None: ...

    async def get_session(self, sid: str) -> dict[str, str] | None: ...

    async def rotate_refresh(
        self, sid: str, presented_hash: str, new_hash: str, now: float, ttl: int
    ) -> tuple[RotateOutcome, dict[str, str] | None]:
        """Atomically: if `presented_hash` is the session's current refresh hash, replace it with
        `new_hash`, remember the old one as spent, set `last_used` and the TTL -> ("rotated", session).
        If it is a spent one -> delete the session ("reused", None): reuse means theft.
        Otherwise ("unknown", None) and nothing changes."""

    async def end_session(self, sid: str) -> bool:
        """Delete the session; True if it existed."""

    async def add_member(self, key: str, member: str, ttl: int) -> None:
        """Add to an expiring set (e.g. a person's session ids); the TTL is extended, never shortened."""

    async def members(self, key: str) -> set[str]: ...

    async def remove_member(self, key: str, member: str) -> None: ...

    # Feeds: append-only logs read by cursor (the session-end feed, gateway/tokens/session_ends.py) ------
    async def feed_append(self, feed: str, entry: str, retention: int) -> str:
        """Append `entry`; returns its cursor (`<ms>-<n>`, increasing). Entries older than `retention`
        seconds may be dropped. Wakes the feed's waiters in every process. Appending twice (a retry
        after a lost reply) leaves the entry twice: readers must not mind."""

    async def feed_read(self, feed: str, after: str, limit: int) -> tuple[list[tuple[str, str]], str]:
        """Up to `limit` (cursor, entry) after the cursor `after` ('' for the oldest kept), and the
        cursor to read from next (the last one returned, else `after`, else '0-0')."""

    def feed_subscribe(self, feed: str) -> AbstractAsyncContextManager[Waiter]:
        """A waiter woken by every append to `feed` in any process, registered on entry."""

    # Generic expiring data ---------------------------------------------------------------------
    async def hit(self, key: str, ttl: int, *, approximate: bool = False) -> int:
        """Increment a counter; its TTL starts at the first hit. Returns the new count. `approximate`:
        the count may be one too high (a hit sent again after its reply was lost), as a generous rate
        limit can afford; otherwise a lost reply is an error (503), never a double count."""

    async def put(self, key: str, value: Mapping[str, str], ttl: int) -> None: ...

    async def get(self, key: str) -> dict[str, str] | None: ...

    async def take(self, key: str) -> dict[str, str] | None:
        """Atomic get-and-delete: of concurrent takers, exactly one gets the value."""

    async def delete(self, key: str) -> None: ...

    # Delayed work: a queue any process takes from (a sorted set of due times and a hash of payloads) --
    async def enqueue(self, queue: str, item_id: str, payload: str, due: float, *, limit: int, ttl: int) -> bool:
        """Add `item_id` to be done at `due` (seconds since 1970), unless it is queued already (True
        either way). False, and nothing added, when the queue holds `limit` items. The queue lives
        `ttl` seconds after the last item added."""

    async def claim_due(self, queue: str, now: float, lease: float, count: int) -> list[tuple[str, str]]:
        """Atomically: up to `count` items due by `now`, each made due again at `now + lease` (so that
        if the claimer dies with it, any process takes it again then), as (item id, payload)."""

    async def reschedule(self, queue: str, item_id: str, payload: str, due: float) -> None:
        """Replace a queued item's payload and due time (nothing when it is no longer queued)."""

    async def finish(self, queue: str, item_id: str) -> None:
        """Remove an item."""

    async def queued(self, queue: str) -> int:
        """How many items the queue holds (due or not)."""

    # Guarded attempts at a secret (gateway/state/attempts.py) -----------------------------------
    async def admit_attempt(
        self, key: str, attempt: str, captcha: attempts.CaptchaCheck, limits: attempts.AttemptLimits, now: float
    ) -> attempts.Admitted:
        """One atomic step: lock, captcha rule, and a place for `attempt` if one is left."""

    async def settle_attempt(
        self, key: str, attempt: str, outcome: attempts.Outcome, limits: attempts.AttemptLimits, now: float
    ) -> attempts.Settled:
        """One atomic step: give the place back and count the verdict (the max-th failure locks)."""

    async def attempt_status(self, key: str, now: float) -> attempts.AttemptStatus: ...

    async def clear_attempts(self, key: str, now: float) -> bool:
        """Forget the subject's failures, lock and captcha rule; True when it was locked."""


def cursor_order(cursor: str) -> tuple[int, int]:
    """A feed cursor `<ms>-<n>` as a comparable pair; anything else sorts first."""
    ms, _, n = cursor.partition("-")
    return (int(ms), int(n or 0)) if ms.isdigit() and (not n or n.isdigit()) else (-1, -1)


@asynccontextmanager
async def waiting(waiters: LocalWaiters, channel: str) -> AsyncIterator[Waiter]:
    waiter = Waiter()
    waiters.add(channel, waiter)
    try:
        yield waiter
    finally:
        waiters.remove(channel, waiter)
