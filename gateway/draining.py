"""Shutdown in two steps, shared by every adapter that holds a client waiting (WebSocket, long-poll)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.state.base import Waiter


@dataclass
class Draining:
    """Shutdown in two steps. `started`: readiness fails, so load balancers stop sending new work
    (requests are still served). `closing`: open WebSockets close with 1001 and long-polls answer,
    and clients reconnect to another process."""

    not_ready: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    waiting_sockets: int = 0
    _no_sockets: asyncio.Event = field(default_factory=asyncio.Event)
    _held: set[Waiter] = field(default_factory=set)  # woken when closing begins

    def __post_init__(self) -> None:
        self._no_sockets.set()

    @property
    def started(self) -> bool:
        return self.not_ready.is_set()

    def close_connections(self) -> None:
        """Step two: every waiting WebSocket and long-poll is woken to answer and close."""
        self.closing.set()
        for waiter in list(self._held):
            waiter.wake()

    def hold(self, waiter: Waiter) -> None:
        """Wake `waiter` when closing begins (at once if it has)."""
        self._held.add(waiter)
        if self.closing.is_set():
            waiter.wake()

    def release(self, waiter: Waiter) -> None:
        self._held.discard(waiter)

    def socket_opened(self) -> None:
        self.waiting_sockets += 1
        self._no_sockets.clear()

    def socket_closed(self) -> None:
        self.waiting_sockets -= 1
        if self.waiting_sockets == 0:
            self._no_sockets.set()

    async def sockets_closed(self, timeout: float) -> bool:
        """Wait until every waiting WebSocket has closed (True), or `timeout` (False)."""
        try:
            async with asyncio.timeout(timeout):
                await self._no_sockets.wait()
        except TimeoutError:
            return False
        return True
