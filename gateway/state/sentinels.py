"""Follow the Sentinels' `+switch-master` announcements, so that a process stops using a replaced
master at once.

Without this, the store would find the new master only when its connection to the old one fails, or
when the old master, once demoted, refuses a write (READONLY). After a *manual* failover
(`SENTINEL FAILOVER`) the old master stays up and goes on accepting writes until the Sentinels
reconfigure it, which can take tens of seconds, and what it acknowledged meanwhile is lost when it
resynchronises from the new master. With this watch the window shrinks to the time between the
promotion and its announcement reaching this process: the leading Sentinel sees the promotion within
a second (it polls a promoted replica's role every second), and the Sentinel this process listens to,
if another one, hears of it from the leader's hello messages (every two seconds).

One connection to one Sentinel at a time (the next one when it fails), subscribed to
`+switch-master`, with a PING every health interval; silence for three intervals counts as a failure.
When no Sentinel could be listened to, the next round waits (`redis_clients.reconnect_backoff`: 50 ms
doubling to 2 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from gateway.state.connections import ConnectionSettings, PubSubConnection, fixed_address, open_connection
from gateway.state.redis_clients import Address, Backoff, reconnect_backoff
from gateway.state.redis_clients import exceptions as rx

log = logging.getLogger("qrgate.state.redis")

CHANNEL = "+switch-master"


class SentinelWatch:
    def __init__(
        self,
        service: str,
        sentinels: Sequence[tuple[Address, ConnectionSettings]],
        on_switch: Callable[[], None],
        *,
        health_interval: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._service = service
        self._sentinels = list(sentinels)
        self._on_switch = on_switch
        self._health_interval = health_interval
        self._backoff = backoff if backoff is not None else reconnect_backoff()
        self._task: asyncio.Task[None] | None = None
        self._heard = 0.0
        self.listening = asyncio.Event()  # set while subscribed on some Sentinel (for tests)

    def start(self) -> None:
        if self._task is None and self._sentinels:
            self._task = asyncio.create_task(self._run(), name="qrgate-sentinel-watch")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        failures = 0  # rounds ended since a Sentinel was last listened to
        while True:
            for address, settings in self._sentinels:
                try:
                    connection = await open_connection(fixed_address(address), settings, PubSubConnection, None)
                except rx.RedisError as exc:
                    log.debug("sentinel %s unreachable: %r", address, exc)
                    continue
                try:
                    await self._listen(connection)
                    failures = 0
                    self._backoff.reset()
                finally:
                    self.listening.clear()
                    connection.close()
            failures += 1
            await asyncio.sleep(self._backoff.compute(failures))

    async def _listen(self, connection: PubSubConnection) -> None:
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[rx.RedisError] = loop.create_future()
        connection.on_message = self._received
        connection.on_lost = lambda error: None if lost.done() else lost.set_result(error)
        connection.write("SUBSCRIBE", CHANNEL)
        self._heard = loop.time()
        while not lost.done():
            try:
                async with asyncio.timeout(self._health_interval):
                    await asyncio.shield(lost)
            except TimeoutError:
                if loop.time() - self._heard > 3 * self._health_interval:
                    return
                connection.write("PING")

    def _received(self, reply: Any) -> None:
        self._heard = asyncio.get_running_loop().time()
        if not isinstance(reply, list) or len(reply) < 3:
            return
        if reply[0] == "subscribe":
            self.listening.set()
        elif reply[0] == "message" and reply[1] == CHANNEL:
            # "<service> <old ip> <old port> <new ip> <new port>"
            fields = str(reply[2]).split()
            if fields and fields[0] == self._service:
                log.warning("the Sentinels moved the master of %s to %s", self._service, " ".join(fields[3:5]))
                self._on_switch()
