"""Fan-out: wake this process's waiters when a QR session changes, over Redis sharded pub/sub.

Per store (one per process) there is one fan-out task, which owns the pub/sub connections
(standalone and Sentinel: exactly one, to the master; Cluster: one per master holding a subscribed
channel, since shard channels live on their slot's master). They are `connections.PubSubConnection`s:
what Redis sends is handled as it is parsed, in the connection's `data_received`, with no task or
queue in between. A waiter registers locally first; the first local waiter of a channel makes the
fan-out SSUBSCRIBE and waits for Redis to confirm, so a state read that follows cannot miss a change;
the last one to leave SUNSUBSCRIBEs. A message only sets Events, so a slow client never stalls
fan-out. When a pub/sub connection fails (or stays silent past three health-check PINGs, or the
Sentinels announce a new master), the fan-out drops it, reconnects after a wait that doubles while
connecting keeps failing (`redis_clients.reconnect_backoff`: 0.05 s .. 2 s), re-subscribes every
channel that still has local waiters and then wakes them all: they read the state again, which is the
truth, so nothing published during the gap is lost. The pub/sub connections never retry by themselves
(a silent reconnect would hide a gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias

import hiredis

from gateway.state.base import LocalWaiters, Waiter
from gateway.state.connections import PubSubConnection
from gateway.state.redis_clients import Backoff, reconnect_backoff, text_of
from gateway.state.redis_clients import exceptions as rx
from gateway.state.wire import Wire

log = logging.getLogger("qrgate.state.redis")

HEALTH_INTERVAL = 5.0
CONFIRM_TIMEOUT = 2.0


class _Resync(Exception):
    """Redis dropped a subscription we still need (a slot moved): start over."""


Message: TypeAlias = dict[str, Any]


class _Link:
    """One generation of pub/sub connections (standalone and Sentinel: one, to the master; Cluster:
    one per master holding a subscribed channel, since shard channels live on their slot's master).
    What they receive goes to `deliver`; the first failure to `fail`."""

    def __init__(self, wire: Wire, deliver: Callable[[Message], None], fail: Callable[[BaseException], None]) -> None:
        self._wire = wire
        self._deliver = deliver
        self._fail = fail
        self._connections: dict[str, PubSubConnection] = {}
        self._opening: dict[str, asyncio.Task[PubSubConnection]] = {}
        self._subscribed_on: dict[str, PubSubConnection] = {}

    async def prepare(self, again: bool) -> None:
        """Get ready to route channels (after a failure, `again`: read a Cluster's slot map again)."""
        await self._wire.ready()
        if again:
            await self._wire.refresh()

    async def _connection_for(self, channel: str) -> PubSubConnection:
        server = await self._wire.route(channel)
        connection = self._connections.get(server.name)
        if connection is not None:
            return connection
        opening = self._opening.get(server.name)
        if opening is None:
            opening = self._opening[server.name] = asyncio.create_task(server.open_pubsub())
        try:
            connection = await asyncio.shield(opening)
        finally:
            self._opening.pop(server.name, None)
        if server.name not in self._connections:
            connection.on_message = self._received
            connection.on_lost = self._fail
            self._connections[server.name] = connection
        return self._connections[server.name]

    def _received(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) >= 2:
            self._deliver({"type": text_of(reply[0]), "channel": text_of(reply[1])})
        elif isinstance(reply, hiredis.ReplyError) and str(reply).startswith(("MOVED ", "ASK ")):
            # An SSUBSCRIBE routed by a stale slot map (the slot moved): it will never be confirmed.
            # Start over, which reads the map again and subscribes on the slot's owner.
            self._fail(_Resync(f"Redis redirected a subscription ({reply})"))
        else:  # PONG outside subscribe mode, or anything else: proof of life
            self._deliver({"type": "pong", "channel": ""})

    async def subscribe(self, channel: str) -> None:
        connection = await self._connection_for(channel)
        connection.write("SSUBSCRIBE", channel)
        self._subscribed_on[channel] = connection

    def unsubscribe(self, channel: str) -> None:
        """On the connection that holds the subscription (a lost one fails the generation anyway)."""
        connection = self._subscribed_on.pop(channel, None)
        if connection is not None:
            connection.write("SUNSUBSCRIBE", channel)

    async def ping(self) -> bool:
        """Ask every connection for a reply; False when none is connected."""
        for connection in self._connections.values():
            connection.write("PING")
        return bool(self._connections)

    async def aclose(self) -> None:
        for task in self._opening.values():
            task.cancel()
        for connection in self._connections.values():
            connection.on_lost = lambda _error: None
            connection.close()
        self._connections.clear()


class _Subscription:
    __slots__ = ("confirmed",)

    def __init__(self) -> None:
        self.confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(self) -> None:
        if not self.confirmed.done():
            self.confirmed.set_result(None)


class _Generation:
    """The fan-out's state for one set of pub/sub connections; thrown away whole when one fails."""

    def __init__(self, wire: Wire, handle: Callable[[_Generation, Message], None]) -> None:
        self.link = _Link(wire, lambda message: handle(self, message), self.fail)
        self.failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.lock = asyncio.Lock()  # serialises (un)subscribe commands and their bookkeeping
        self.subs: dict[str, _Subscription] = {}
        self.sent_sub: Counter[str] = Counter()
        self.sent_unsub: Counter[str] = Counter()
        self.resubscribing: set[str] = set()
        self.broken = False
        self.heard = False
        self.last_heard = time.monotonic()

    def fail(self, error: BaseException) -> None:
        if not self.broken:
            self.broken = True
            self.failure.set_result(error)


class Fanout:
    """The process's single pub/sub reader for one store (see the module docs)."""

    def __init__(
        self,
        wire: Wire,
        waiters: LocalWaiters,
        *,
        health_interval: float = HEALTH_INTERVAL,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        backoff: Backoff | None = None,
    ) -> None:
        self._wire = wire
        wire.on_master_switch(self._master_switched)
        self._waiters = waiters
        self._health_interval = health_interval
        self._confirm_timeout = confirm_timeout
        self._backoff = backoff if backoff is not None else reconnect_backoff()
        self._active: set[str] = set()  # channels with local waiters
        self._owed: set[str] = set()  # channels whose waiters went on before Redis confirmed
        self._generation: _Generation | None = None
        self._task: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._closed = False
        self._started = asyncio.Event()  # set once the first generation is up (or has failed)
        self.reconnects = 0  # generations started after a failure (for tests and metrics)

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="qrgate-redis-fanout")

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._chores, *([self._task] if self._task is not None else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        generation, self._generation = self._generation, None
        if generation is not None:
            await self._teardown(generation)

    # Waiters ---------------------------------------------------------------------------------
    async def join(self, channel: str, waiter: Waiter) -> None:
        """Register `waiter`; return once the channel's subscription is live (or a reconnect, which
        wakes every waiter, is bound to follow)."""
        if self._waiters.add(channel, waiter):
            self._active.add(channel)
        if self._closed:
            return
        self.start()
        if self._generation is None and not self._started.is_set():
            # Starting up: wait (briefly) for the first connection rather than be woken by it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._confirm_timeout):
                    await self._started.wait()
        if not await self._confirmed(channel):
            # The caller reads the state now, before we listen: it is owed a wake-up, from the
            # confirmation when it comes, or from the wake_all that follows a reconnect.
            self._owed.add(channel)

    async def _confirmed(self, channel: str) -> bool:
        generation = self._generation
        if generation is None or generation.broken:
            return False
        async with generation.lock:
            if generation.broken or channel not in self._active:
                return False
            sub = generation.subs.get(channel)
            if sub is None:
                try:
                    sub = await self._subscribe(generation, channel)
                except Exception as exc:
                    generation.fail(exc)
                    return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._confirm_timeout):
                await asyncio.shield(sub.confirmed)
        return sub.confirmed.done() and not generation.broken

    def leave(self, channel: str, waiter: Waiter) -> None:
        if not self._waiters.remove(channel, waiter):
            return
        self._active.discard(channel)
        self._owed.discard(channel)
        generation = self._generation
        if generation is None or generation.broken or channel not in generation.subs or self._closed:
            return
        if not generation.lock.locked():
            self._unsubscribe_now(generation, channel)  # nothing in progress: no task needed
            return
        chore = asyncio.create_task(self._unsubscribe(generation, channel))
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    async def _subscribe(self, generation: _Generation, channel: str) -> _Subscription:
        sub = _Subscription()
        generation.subs[channel] = sub
        generation.sent_sub[channel] += 1
        try:
            await generation.link.subscribe(channel)
        except asyncio.CancelledError:
            # Interrupted mid-command: whether Redis got it is unknown, so start over.
            generation.fail(rx.ConnectionError("a subscription was interrupted"))
            raise
        return sub

    async def _unsubscribe(self, generation: _Generation, channel: str) -> None:
        async with generation.lock:
            self._unsubscribe_now(generation, channel)

    def _unsubscribe_now(self, generation: _Generation, channel: str) -> None:
        """SUNSUBSCRIBE (written without waiting), unless the channel has waiters again."""
        if generation.broken or channel in self._active:
            return
        sub = generation.subs.pop(channel, None)
        if sub is None:
            return
        sub.settle()
        generation.sent_unsub[channel] += 1
        try:
            generation.link.unsubscribe(channel)
        except Exception as exc:
            generation.fail(exc)

    # The connections -----------------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0  # generations lost in a row (one that heard from Redis ends the streak)
        again = False
        while True:
            generation = _Generation(self._wire, self._received)
            self._generation = generation
            try:
                await self._populate(generation, again)
                self._started.set()
                await self._serve(generation)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if generation.heard:  # it worked for a while: the waits start again from the shortest
                    failures = 0
                    self._backoff.reset()
                failures += 1
                delay = self._backoff.compute(failures)
                level = logging.DEBUG if isinstance(exc, _Resync) else logging.WARNING
                log.log(level, "redis pub/sub lost (%r); reconnecting in %.2fs", exc, delay)
            finally:
                self._started.set()
                if self._generation is generation:
                    self._generation = None
                await self._teardown(generation)
            again = True
            self.reconnects += 1
            await asyncio.sleep(delay)

    async def _populate(self, generation: _Generation, again: bool) -> None:
        """Subscribe every channel that has local waiters. After a failure (`again`), wake them all
        once that is done: a wake-up published while we were away is lost, the state is not."""
        await generation.link.prepare(again)
        async with generation.lock:
            channels = sorted(self._active)
            if again:
                generation.resubscribing = set(channels)
            for channel in channels:
                await self._subscribe(generation, channel)
        if again and not channels:
            self._wake_all()

    def _wake_all(self) -> None:
        self._owed.clear()
        self._waiters.wake_all()

    async def _serve(self, generation: _Generation) -> NoReturn:
        """Check the connections' health until one fails (messages are handled as they arrive)."""
        while True:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that coincides with the result, and close() would then wait for ever.
                async with asyncio.timeout(self._health_interval):
                    raise await asyncio.shield(generation.failure)
            except TimeoutError:
                await self._check_health(generation)

    def _master_switched(self) -> None:
        """The Sentinels chose a new master: start over there (re-subscribe, then wake everyone)."""
        if self._generation is not None:
            self._generation.fail(rx.ConnectionError("the Sentinels switched to a new master"))

    def _received(self, generation: _Generation, message: Message) -> None:
        if generation.broken or self._generation is not generation:
            return
        generation.last_heard = time.monotonic()
        generation.heard = True
        try:
            self._handle(generation, message)
        except _Resync as exc:
            generation.fail(exc)

    async def _check_health(self, generation: _Generation) -> None:
        silent = time.monotonic() - generation.last_heard
        if silent > 3 * self._health_interval:
            raise rx.TimeoutError(f"no reply on the pub/sub connection for {silent:.1f}s")
        if not await generation.link.ping():
            generation.last_heard = time.monotonic()  # nothing connected: nothing to hear

    def _handle(self, generation: _Generation, message: Message) -> None:
        kind = text_of(message.get("type"))
        channel = text_of(message.get("channel"))
        if kind == "smessage":
            self._waiters.wake(channel)
        elif kind == "ssubscribe":
            generation.sent_sub[channel] -= 1
            if generation.sent_sub[channel] <= 0:
                del generation.sent_sub[channel]
                sub = generation.subs.get(channel)
                if sub is not None and not sub.confirmed.done():
                    sub.settle()
                    if channel in self._owed:
                        self._owed.discard(channel)
                        self._waiters.wake(channel)
            if channel in generation.resubscribing:
                generation.resubscribing.discard(channel)
                if not generation.resubscribing:
                    self._wake_all()
        elif kind == "sunsubscribe":
            if generation.sent_unsub[channel] > 0:
                generation.sent_unsub[channel] -= 1
            elif channel in generation.subs:
                raise _Resync(f"Redis dropped the subscription to {channel}")

    async def _teardown(self, generation: _Generation) -> None:
        generation.broken = True
        for sub in generation.subs.values():
            sub.settle()
        try:
            await generation.link.aclose()
        except Exception as exc:
            log.debug("closing a pub/sub connection failed: %r", exc)
