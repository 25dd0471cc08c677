"""The store's command path: auto-pipelined connections to Redis, one per server.

Why not redis-py's own command path: measured here (2 cores, uvloop, hiredis), `await client.hgetall(k)`
costs about 115 µs of CPU, of which the server's share is small: the rest is connection-pool checkout,
asyncio streams, a timeout context and response wrappers per command. A QR login needs about a dozen
commands, so that alone was a third of the gateway's CPU per login. Here every command of the process
goes to its server's one connection: commands issued in the same event-loop turn are written together
(one `write`), replies are parsed by hiredis straight from `data_received` and handed to waiting
futures in order. That costs about 6 µs per command under load, and Redis likes pipelines too.

redis-py (`redis.asyncio`) still does everything else: it parses the URL into connection settings
(TLS context included), finds the master through the Sentinels, and keeps the Cluster's slot map
(which this module asks to refresh after a MOVED reply or a lost node). The fan-out's pub/sub
connections (`PubSubConnection`) are opened here too, one per server, separate from the commands'.

Failures. A connection that fails, or has a command unanswered for `socket_timeout`, is closed: every
command in flight on it fails with `ConnectionError`/`TimeoutError`. A command that was never written
(no connection could be made) is retried with capped exponential backoff, up to `retries` times; one
that was written is retried only if it is idempotent (reads, whole-value writes), because its effect is
unknown. Replies that mean "not here, not now" are followed: MOVED (refresh the slot map, go there),
ASK (ASKING, then there), TRYAGAIN, CLUSTERDOWN, LOADING, MASTERDOWN (back off, again), READONLY
(a demoted master: reconnect, which asks the Sentinels again). NOSCRIPT sends the script itself once.
Behind Sentinel, the wire also follows the Sentinels' announcements of a new master (`sentinels`).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeAlias, cast

import hiredis
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.crc import key_slot

from gateway.state.connections import (
    Address,
    Arg,
    ConnectionSettings,
    Server,
    fixed_address,
    pack,
    settings_from,
)
from gateway.state.sentinels import SentinelWatch

_ScriptCall: TypeAlias = tuple["Script", Sequence[str], Sequence[Arg]]

BACKOFF_BASE = 0.05
BACKOFF_CAP = 0.5
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
        client: Redis | RedisCluster,
        *,
        socket_timeout: float,
        connect_timeout: float,
        retries: int,
    ) -> None:
        self._retries = retries
        self._servers: dict[str, Server] = {}
        self._cluster: RedisCluster | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._refresh_wanted = False
        self._cluster_ready = False
        self._ready_lock = asyncio.Lock()
        self._closed = False
        self._watch: SentinelWatch | None = None
        self._switch_listeners: list[Callable[[], None]] = []
        if isinstance(client, RedisCluster):
            self._cluster = client
            manager = client.nodes_manager
            kwargs = dict(manager.connection_kwargs)
            self._settings = settings_from(
                kwargs, kwargs.get("connection_class", object), socket_timeout, connect_timeout
            )
            # Cluster nodes have no databases: SELECT would fail there.
            self._settings.handshake = [c for c in self._settings.handshake if c[0] != "SELECT"]
            return
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        self._settings = settings_from(kwargs, pool.connection_class, socket_timeout, connect_timeout)
        locate: Callable[[], Awaitable[Address]]
        if isinstance(pool, SentinelConnectionPool):
            sentinel_pool = pool

            async def master() -> Address:
                host, port = await cast(Any, sentinel_pool).get_master_address()
                return (str(host), int(port))

            locate = master
            watched: list[tuple[Address, ConnectionSettings]] = []
            for sentinel in cast(Any, pool).sentinel_manager.sentinels:
                found = dict(sentinel.connection_pool.connection_kwargs)
                address = (str(found.get("host", "localhost")), int(found.get("port", 26379)))
                kind = sentinel.connection_pool.connection_class
                watched.append((address, settings_from(found, kind, socket_timeout, connect_timeout)))
            self._watch = SentinelWatch(str(pool.service_name), watched, self._master_switched)
        elif issubclass(pool.connection_class, UnixDomainSocketConnection):
            locate = fixed_address(str(kwargs["path"]))
        else:
            locate = fixed_address((str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379))))
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
    def _server_named(self, name: str, host: str, port: int) -> Server:
        server = self._servers.get(name)
        if server is None:
            server = self._servers[name] = Server(name, fixed_address((host, port)), self._settings)
        return server

    async def ready(self) -> None:
        """Cluster: read the slot map once before the first command."""
        if self._cluster is not None and not self._cluster_ready:
            async with self._ready_lock:  # concurrent first commands: one reads the map
                if not self._cluster_ready:
                    await self._cluster.initialize()
                    self._cluster_ready = True

    async def route(self, key: str | None) -> Server:
        """The server that holds `key` (any master for None)."""
        if self._cluster is not None:
            if not self._cluster_ready:
                await self.ready()
            if self._refresh_wanted:
                await self.refresh()
        return self._route_now(key)

    def _route_now(self, key: str | None) -> Server:
        """`route` once the slot map is known and fresh (no waiting: the common case)."""
        cluster = self._cluster
        if cluster is None:
            return self._servers[""]
        manager = cluster.nodes_manager
        if key is None:
            node = manager.get_nodes_by_server_type("primary")[0]
        else:
            node = manager.get_node_from_slot(key_slot(key.encode()))
        return self._server_named(node.name, node.host, int(node.port))

    async def refresh(self) -> None:
        """Read the Cluster's slot map again (one refresh at a time for all callers)."""
        if self._cluster is None:
            return
        if self._refreshing is None:
            self._refresh_wanted = False
            self._refreshing = asyncio.create_task(self._cluster.nodes_manager.initialize())
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
        if self._cluster is None:
            await self.call(None, "PING", idempotent=True)
            return
        await self.ready()
        for node in self._cluster.nodes_manager.get_nodes_by_server_type("primary"):
            server = self._server_named(node.name, node.host, int(node.port))
            reply = await (await server.connection()).send(pack(("PING",)))
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
                elif self._cluster is None or (self._cluster_ready and not self._refresh_wanted):
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
                if self._cluster is not None:
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
            if word in ("MOVED", "ASK") and self._cluster is not None and redirects < MAX_REDIRECTS:
                redirects += 1
                target = message.split(" ")[2]
                host, _, port = target.rpartition(":")
                if word == "MOVED":
                    await self.refresh()
                else:
                    asking = self._server_named(target, host, int(port))
                continue
            if word == "READONLY":
                server.drop()  # a demoted master: connect again (Sentinel: to the new master)
                if self._cluster is not None:
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

    @staticmethod
    async def _back_off(failures: int) -> None:
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (failures - 1))
        await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 (jitter, not a secret)

    async def close(self) -> None:
        self._closed = True
        if self._watch is not None:
            await self._watch.close()
        for server in self._servers.values():
            server.close()
        self._servers.clear()
