"""The store's command path: auto-pipelined connections to Redis, one per server.

Why not redis-py's own command path: measured here (2 cores, uvloop, hiredis), `await client.hgetall(k)`
costs about 115 µs of CPU, of which the server's share is small: the rest is connection-pool checkout,
asyncio streams, a timeout context and response wrappers per command. A QR login needs about a dozen
commands, so that alone was a third of the gateway's CPU per login. Here every command of the process
goes to its server's one connection: commands issued in the same event-loop turn are written together
(one `write`), replies are parsed by hiredis straight from `data_received` and handed to waiting
futures in order. That costs about 6 µs per command under load, and Redis likes pipelines too.

Where to connect comes from the URL (`redis_clients.RedisTarget`); behind Sentinel, redis-py finds the
master (`redis_clients.SentinelMaster`); on a Cluster, the wire reads the slot map itself (`slots`)
and reads it again after a MOVED reply or a lost node. The fan-out's pub/sub connections
(`PubSubConnection`) are opened here too, one per server, separate from the commands'.

Failures. A connection that fails, or has a command unanswered for `socket_timeout`, is closed: every
command in flight on it fails with `ConnectionError`/`TimeoutError`. A command that was never written
(no connection could be made) is retried after a wait (`redis_clients.command_backoff`: 50 ms doubling
to 500 ms, with jitter), up to `retries` times; one that was written is retried only if it is
idempotent (reads, whole-value writes), because its effect is unknown. Replies that mean "not here,
not now" are followed: MOVED (refresh the slot map, go there), ASK (ASKING, then there), TRYAGAIN,
CLUSTERDOWN, LOADING, MASTERDOWN (back off, again), READONLY (a demoted master: reconnect, which asks
the Sentinels again). NOSCRIPT sends the script itself once.
Behind Sentinel, the wire also follows the Sentinels' announcements of a new master (`sentinels`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeAlias

import hiredis

from gateway.state.connections import (
    Arg,
    Opener,
    Server,
    fixed_address,
    open_socket,
    pack,
    sentinel_settings,
    server_settings,
)
from gateway.state.redis_clients import (
    Address,
    Backoff,
    RedisTarget,
    SentinelMaster,
    command_backoff,
    slot_of,
)
from gateway.state.redis_clients import exceptions as rx
from gateway.state.sentinels import SentinelWatch
from gateway.state.slots import Node, SlotMap

log = logging.getLogger("qrgate.state.redis")

_ScriptCall: TypeAlias = tuple["Script", Sequence[str], Sequence[Arg]]

MAX_REDIRECTS = 5

# Replies after which the same command may simply be sent again later: the server did not run it.
_BACK_OFF_REPLIES: dict[str, type[rx.RedisError]] = {
    "TRYAGAIN": rx.TryAgainError,
    "CLUSTERDOWN": rx.ClusterDownError,
    "LOADING": rx.BusyLoadingError,
    "MASTERDOWN": rx.MasterDownError,
}


class Script:
    """A Lua script, sent as EVALSHA (and once as EVAL when the server does not know it yet)."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()  # the name Redis gives it


class Wire:
    """Every command of one store: `call` for a command on a key, `script` for a Lua script."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        socket_timeout: float,
        connect_timeout: float,
        retries: int,
        backoff: Backoff | None = None,
        opener: Opener = open_socket,
    ) -> None:
        self._retries = retries
        # Stateless, so one for all commands: a command's own failure count picks the wait.
        self._backoff = backoff if backoff is not None else command_backoff()
        self._servers: dict[str, Server] = {}
        self._slots: SlotMap | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._refresh_wanted = False
        self._cluster_ready = False
        self._ready_lock = asyncio.Lock()
        self._closed = False
        self._master: SentinelMaster | None = None
        self._watch: SentinelWatch | None = None
        self._switch_listeners: list[Callable[[], None]] = []
        timeouts = {"socket_timeout": socket_timeout, "connect_timeout": connect_timeout}
        self._settings = server_settings(target, opener=opener, **timeouts)
        if target.kind == "cluster":
            self._slots = SlotMap([address for address in target.addresses if isinstance(address, tuple)])
            return
        locate: Callable[[], Awaitable[Address]]
        if target.kind == "sentinel":
            self._master = SentinelMaster(target, **timeouts)
            locate = self._master.locate
            watched = sentinel_settings(target, opener=opener, **timeouts)
            self._watch = SentinelWatch(
                target.service, [(address, watched) for address in target.addresses], self._master_switched
            )
        else:
            locate = fixed_address(target.addresses[0])
        self._servers[""] = Server("", locate, self._settings)

    # Life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Sentinel: start following the Sentinels' master switches (see `sentinels`)."""
        if self._watch is not None:
            self._watch.start()

    @property
    def connects(self) -> int:
        """Command connections made so far (all servers); more than one per server means reconnects."""
        return sum(server.connects for server in self._servers.values())

    @property
    def sentinel_watch(self) -> SentinelWatch | None:
        return self._watch

    def on_master_switch(self, listener: Callable[[], None]) -> None:
        """Call `listener` when the Sentinels announce a new master (after this wire has left the old one)."""
        self._switch_listeners.append(listener)

    def _master_switched(self) -> None:
        self._servers[""].drop()  # the next command asks the Sentinels for the master again
        for listener in self._switch_listeners:
            listener()

    # Routing ---------------------------------------------------------------------------------
    @property
    def slot_map(self) -> SlotMap | None:
        """Cluster: which master serves each slot (None otherwise)."""
        return self._slots

    def _server_at(self, node: Node) -> Server:
        server = self._servers.get(node.name)
        if server is None:
            server = self._servers[node.name] = Server(node.name, fixed_address((node.host, node.port)), self._settings)
        return server

    async def _cluster_slots(self, node: Node) -> Any:
        """The node's CLUSTER SLOTS reply (for `SlotMap.read`), over its command connection."""
        reply = await (await self._server_at(node).connection()).send(pack(("CLUSTER", "SLOTS")))
        if isinstance(reply, hiredis.ReplyError):
            raise rx.RedisClusterException(f"Redis {node.name} refused CLUSTER SLOTS (no Cluster mode?): {reply}")
        return reply

    async def ready(self) -> None:
        """Cluster: read the slot map once before the first command."""
        if self._slots is not None and not self._cluster_ready:
            async with self._ready_lock:  # concurrent first commands: one reads the map
                if not self._cluster_ready:
                    await self._slots.read(self._cluster_slots)
                    self._cluster_ready = True

    async def route(self, key: str | None) -> Server:
        """The server that holds `key` (any master for None)."""
        if self._slots is not None:
            if not self._cluster_ready:
                await self.ready()
            if self._refresh_wanted:
                await self.refresh()
        return self._route_now(key)

    def _route_now(self, key: str | None) -> Server:
        """`route` once the slot map is known and fresh (no waiting: the common case)."""
        slots = self._slots
        if slots is None:
            return self._servers[""]
        return self._server_at(slots.masters[0] if key is None else slots.owner(slot_of(key)))

    async def refresh(self) -> None:
        """Read the Cluster's slot map again (one refresh at a time for all callers)."""
        if self._slots is None:
            return
        if self._refreshing is None:
            self._refresh_wanted = False
            self._refreshing = asyncio.create_task(self._slots.read(self._cluster_slots))
            self._refreshing.add_done_callback(lambda _: setattr(self, "_refreshing", None))
        await asyncio.shield(self._refreshing)

    # Commands --------------------------------------------------------------------------------
    # `call` and `script` are plain functions that return `_execute`'s coroutine: one coroutine, not
    # two, per command (a dozen commands per login).
    def call(self, key: str | None, *command: Arg, idempotent: bool) -> Coroutine[Any, Any, Any]:
        return self._execute(key, pack(command), None, idempotent)

    def script(
        self, script: Script, keys: Sequence[str], args: Sequence[Arg], *, idempotent: bool
    ) -> Coroutine[Any, Any, Any]:
        payload = pack(("EVALSHA", script.sha, len(keys), *keys, *args))
        return self._execute(keys[0] if keys else None, payload, (script, keys, args), idempotent)

    async def ping(self) -> None:
        """PING the server (Cluster: every master)."""
        if self._slots is None:
            await self.call(None, "PING", idempotent=True)
            return
        await self.ready()
        for node in self._slots.masters:
            reply = await (await self._server_at(node).connection()).send(pack(("PING",)))
            if isinstance(reply, hiredis.ReplyError):
                raise rx.ResponseError(str(reply))

    async def _execute(
        self,
        key: str | None,
        payload: bytes,
        script: tuple[Script, Sequence[str], Sequence[Arg]] | None,
        idempotent: bool,
    ) -> Any:
        failures = 0
        redirects = 0
        asking: Server | None = None
        while True:
            if self._closed:
                raise rx.ConnectionError("the store is closed")
            written = False
            try:
                if asking is not None:
                    server = asking
                elif self._slots is None or (self._cluster_ready and not self._refresh_wanted):
                    server = self._route_now(key)  # no await when nothing is pending
                else:
                    server = await self.route(key)
                connection = server.connected or await server.connection()
                if asking is not None:
                    connection.send(pack(("ASKING",)))
                    asking = None
                future = connection.send(payload)
                written = True
                reply = await future
            except (rx.ConnectionError, rx.TimeoutError, rx.RedisClusterException) as exc:
                if self._slots is not None:
                    self._refresh_wanted = True  # a node may be gone: its slots may have moved
                failures += 1
                if failures > self._retries or (written and not idempotent) or isinstance(exc, rx.AuthenticationError):
                    raise
                await self._back_off(failures)
                continue
            if not isinstance(reply, hiredis.ReplyError):
                return reply
            message = str(reply)
            word = message.split(" ", 1)[0]
            if word == "NOSCRIPT" and script is not None:
                source, keys, args = script
                payload = pack(("EVAL", source.text, len(keys), *keys, *args))
                script = None
                continue
            if word in ("MOVED", "ASK") and self._slots is not None and redirects < MAX_REDIRECTS:
                redirects += 1
                host, _, port = message.split(" ")[2].rpartition(":")
                if word == "MOVED":
                    await self.refresh()
                else:
                    asking = self._server_at(Node(host, int(port)))
                continue
            if word == "READONLY":
                server.drop()  # a demoted master: connect again (Sentinel: to the new master)
                if self._slots is not None:
                    self._refresh_wanted = True
                failures += 1
                if failures > self._retries:
                    raise rx.ReadOnlyError(message)
                await self._back_off(failures)
                continue
            if word in _BACK_OFF_REPLIES:
                failures += 1
                if failures > self._retries:
                    raise _BACK_OFF_REPLIES[word](message)
                await self._back_off(failures)
                continue
            raise rx.ResponseError(message)

    async def _back_off(self, failures: int) -> None:
        await asyncio.sleep(self._backoff.compute(failures))

    async def close(self) -> None:
        self._closed = True
        if self._watch is not None:
            await self._watch.close()
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        if self._master is not None:
            try:
                await self._master.aclose()
            except Exception as exc:
                log.debug("closing the connections to the Sentinels failed: %r", exc)
