"""The one waiting loop: a desktop waits for its QR session to change, over a WebSocket or a long-poll.

The loop never trusts a wake-up's content: a wake-up only makes it read the record again, so nothing is
lost to a reconnect, an instance change or a pub/sub gap. Every read after a wake-up is one call that
also takes delivery when it is due (confirmed -> delivered, atomically in the store), so the result
reaches exactly one waiter and a woken waiter makes one call, not a read and then an attempt.

Codes minted for the browser sign-in page (gateway/oidc/signin.py) keep their result for the server:
their waiter learns that the person confirmed, and nothing more (`Sighting.kept`); the sign-in page then
asks the server to take the result, which signs the browser in without any token reaching the page.

`QrService.watch` opens a `QrWatch` (registered on the wake-up channel, and woken on shutdown);
`first` reads the record and checks the waiter token, each `next` waits for the next change and reads
again. The adapters decide what to send: the WebSocket every sighting, the long-poll the first change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import NamedTuple

from gateway.qr import machine
from gateway.qr.machine import QrEvent, QrRecord, QrState
from gateway.qr.messages import StateView
from gateway.state.base import Waiter
from gateway.tokens.claims import TokenResponse

EXPIRY_GRACE = 0.01  # wake just after the code expires, so that it reads as expired

TakeDelivery = Callable[[], Awaitable[tuple[TokenResponse | None, QrRecord | None]]]


class WatchEnd(Enum):
    """Why `QrWatch.next` returned None."""

    FINAL = "final"  # the last sighting was final: nothing more will happen
    DEADLINE = "deadline"  # the long-poll's `wait` is up
    DRAINING = "draining"  # the process shuts down: the client should come back (elsewhere)
    STOPPED = "stopped"  # `stop()`: the client left


class Sighting(NamedTuple):
    """The QR session as one read found it."""

    state: QrState  # as it read then; CONFIRMED when this watcher took delivery of `tokens`
    record: QrRecord
    tokens: TokenResponse | None = None  # the login result, delivered to this watcher and no other
    kept: bool = False  # confirmed, and the result is kept for the server to take: final, without tokens

    @property
    def final(self) -> bool:
        return self.tokens is not None or self.kept or self.state in machine.TERMINAL

    def view(self, now: float) -> StateView:
        """The long-poll answer, and the body of the WebSocket `state` message."""
        result: StateView = {"state": self.state.value, "expires_in": self.record.expires_in(now)}
        if self.state in (QrState.SCANNED, QrState.CONFIRMED) and self.record.scanner_name:
            result["scanner"] = {"display_name": self.record.scanner_name}
        if self.tokens is not None:
            result["token"] = self.tokens
        return result


class QrWatch:
    def __init__(
        self,
        *,
        read: Callable[[], Awaitable[QrRecord]],
        take_delivery: TakeDelivery,
        waiter: Waiter,
        closing: asyncio.Event,
        deadline: float | None,
        keeps: Callable[[QrRecord], bool] = lambda record: False,
    ) -> None:
        """`keeps(record)`: whether the code's result is kept for the server (never delivered here)."""
        self._read = read
        self._keeps = keeps
        self._take_delivery = take_delivery
        self._waiter = waiter
        self._closing = closing
        self._deadline = deadline  # time.monotonic(); None: wait as long as the code lives
        self._last: Sighting | None = None
        self._stopped = False
        self.ended: WatchEnd | None = None

    def stop(self) -> None:
        """End the watch at its next step (the client left); a `next` waiting returns None now."""
        self._stopped = True
        self._waiter.wake()

    async def first(self) -> Sighting:
        """The record as it is, read after the waiter registered (so no change can slip in between);
        raises when the waiter token is not this code's or the code does not exist."""
        record = await self._read()
        self._last = self._seen(record)
        return self._last

    def _seen(self, record: QrRecord) -> Sighting:
        state = record.state_at(time.time())
        return Sighting(state, record, kept=state is QrState.CONFIRMED and self._keeps(record))

    async def next(self) -> Sighting | None:
        """The record after the next change (or expiry), taking delivery when it is due; None when
        the watch ended (see `ended`). Raises NotFound when the code was purged meanwhile."""
        last = self._last
        assert last is not None, "first() comes first"
        if last.final:
            self.ended = WatchEnd.FINAL
            return None
        if last.state is not QrState.CONFIRMED and not await self._wait_for_change(last.record):
            return None  # confirmed: delivery is due now, no waiting
        if self._keeps(last.record):  # the server takes this result: a wake-up only reads
            self._last = self._seen(await self._read())
            return self._last
        tokens, found = await self._take_delivery()
        if found is None:
            raise machine.refusal(None, machine.plan(QrEvent.DELIVER), time.time())
        if tokens is not None:
            self._last = Sighting(QrState.CONFIRMED, found, tokens)
            return self._last
        state = found.state_at(time.time())
        # A refused delivery cannot leave the code confirmed (delivery applies to any confirmed code);
        # were it ever so, the result went to someone else.
        self._last = Sighting(QrState.DELIVERED if state is QrState.CONFIRMED else state, found)
        return self._last

    async def _wait_for_change(self, record: QrRecord) -> bool:
        timeout = record.expires_at - time.time() + EXPIRY_GRACE
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                self.ended = WatchEnd.DEADLINE
                return False
            timeout = min(remaining, timeout)
        if self._closing.is_set():
            self.ended = WatchEnd.DRAINING
            return False
        await self._waiter.wait(max(0.0, timeout))
        if self._stopped:
            self.ended = WatchEnd.STOPPED
            return False
        if self._closing.is_set():
            self.ended = WatchEnd.DRAINING
            return False
        return True
