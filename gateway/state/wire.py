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
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast

import hiredis
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.crc import key_slot

Arg: TypeAlias = str | int | float | bytes
Address: TypeAlias = tuple[str, int] | str  # (host, port), or a Unix socket path

_C = TypeVar("_C", bound="_Connection")
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


# hiredis packs commands in C; its stub types the argument as a 1-tuple
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


class Script:
    """A Lua script, sent as EVALSHA (and once as EVAL when the server does not know it yet)."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()  # the name Redis gives it


class _Connection(asyncio.Protocol):
    """One connection: commands out in order, replies matched to them in order."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._transport: asyncio.Transport | None = None
        self._progress = 0.0  # when the oldest unanswered command was sent or a reply last came
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(rx.ConnectionError(f"Redis {self.name}: protocol error: {exc}"))
                return
            if reply is False:
                break
            if not pending:
                self._unsolicited(reply)
                continue
            future = pending.popleft()
            if not future.done():
                future.set_result(reply)
        self._progress = self._loop.time()

    def _unsolicited(self, reply: Any) -> None:
        self.abort(rx.ConnectionError(f"Redis {self.name}: a reply nobody asked for"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(rx.ConnectionError(f"Redis {self.name}: connection lost" + (f" ({exc})" if exc else "")))

    # Commands --------------------------------------------------------------------------------
    def send(self, payload: bytes) -> asyncio.Future[Any]:
        """Queue a command (written at the end of this loop turn, with the others); its reply comes
        to the future."""
        if self.closed:
            raise rx.ConnectionError(f"Redis {self.name}: connection closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        if not self._pending:
            self._progress = self._loop.time()
            if self._watchdog is None:
                self._watchdog = self._loop.call_later(self._timeout, self._check_progress)
        self._pending.append(future)
        self._queue(payload)
        return future

    def _queue(self, payload: bytes) -> None:
        self._outgoing.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._outgoing and self._transport is not None and not self.closed:
            data = b"".join(self._outgoing) if len(self._outgoing) > 1 else self._outgoing[0]
            self._outgoing.clear()
            self._transport.write(data)

    def _check_progress(self) -> None:
        self._watchdog = None
        if self.closed or not self._pending:
            return
        waited = self._loop.time() - self._progress
        if waited >= self._timeout:
            self.abort(rx.TimeoutError(f"Redis {self.name}: no reply for {waited:.1f}s"))
        else:
            self._watchdog = self._loop.call_later(self._timeout - waited, self._check_progress)

    def abort(self, error: rx.RedisError) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.abort(rx.ConnectionError(f"Redis {self.name}: closed"))

    def _fail(self, error: rx.RedisError) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._outgoing.clear()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()  # a command nobody awaits any more must not log "never retrieved"


class PubSubConnection(_Connection):
    """A connection for (sharded) pub/sub. Its setup commands are answered in order as usual; after
    that, what Redis sends (subscription confirmations, messages, PONGs) goes to `on_message`, and a
    lost connection is reported once to `on_lost`. Commands are written without waiting for replies."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(name, timeout)
        self.on_message: Callable[[Any], None] = lambda _reply: None
        self.on_lost: Callable[[rx.RedisError], None] = lambda _error: None

    def _unsolicited(self, reply: Any) -> None:
        self.on_message(reply)

    def _fail(self, error: rx.RedisError) -> None:
        was_open = not self.closed
        super()._fail(error)
        if was_open:
            self.on_lost(error)

    def write(self, *command: Arg) -> None:
        if self.closed:
            raise rx.ConnectionError(f"Redis {self.name}: connection closed")
        self._queue(_pack(command))


async def _open(locate: Callable[[], Awaitable[Address]], settings: _Settings, kind: type[_C], client_name: str) -> _C:
    """Connect, then authenticate, select the database and name the connection."""
    connection: _C | None = None
    try:
        address = await locate()
        name = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(settings.connect_timeout):
            if isinstance(address, str):
                _, connection = await loop.create_unix_connection(lambda: kind(name, settings.socket_timeout), address)
            else:
                _, connection = await loop.create_connection(
                    lambda: kind(name, settings.socket_timeout),
                    address[0],
                    address[1],
                    ssl=settings.tls,
                    server_hostname=address[0] if settings.tls is not None else None,
                )
            setup = [*settings.handshake, ("CLIENT", "SETNAME", client_name)]
            for reply in await asyncio.gather(*(connection.send(_pack(command)) for command in setup)):
                if isinstance(reply, hiredis.ReplyError):
                    raise rx.AuthenticationError(f"Redis {name} refused the connection setup: {reply}")
        return connection
    except BaseException as exc:
        if connection is not None:
            connection.close()
        if isinstance(exc, TimeoutError):
            raise rx.TimeoutError("timed out connecting to Redis") from exc
        if isinstance(exc, OSError):
            raise rx.ConnectionError(f"cannot connect to Redis: {exc}") from exc
        raise


class _Server:
    """Where one connection goes, connected on first use and again after a failure."""

    def __init__(self, name: str, locate: Callable[[], Awaitable[Address]], settings: _Settings) -> None:
        self.name = name
        self._locate = locate
        self._settings = settings
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    async def connection(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._connection = task.result()

    async def _connect(self) -> _Connection:
        return await _open(self._locate, self._settings, _Connection, "qrgate")

    async def open_pubsub(self) -> PubSubConnection:
        """A new connection of its own to the same server, for pub/sub."""
        return await _open(self._locate, self._settings, PubSubConnection, "qrgate-pubsub")

    def drop(self) -> None:
        """Close the connection (commands in flight fail); the next command connects again."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        self.drop()
        if self._connecting is not None:
            self._connecting.cancel()


@dataclass(slots=True)
class _Settings:
    tls: ssl.SSLContext | None
    handshake: list[tuple[Arg, ...]]  # AUTH, SELECT
    socket_timeout: float
    connect_timeout: float


def _settings_from(
    kwargs: dict[str, Any], connection_class: type, socket_timeout: float, connect_timeout: float
) -> _Settings:
    """Connection settings from redis-py's own parse of the URL (`connection_kwargs`)."""
    tls = None
    if issubclass(connection_class, SSLConnection):
        tls_kwargs = {name: value for name, value in kwargs.items() if name.startswith("ssl_")}
        tls = SSLConnection(**tls_kwargs).ssl_context.get()
    handshake: list[tuple[Arg, ...]] = []
    username, password = kwargs.get("username"), kwargs.get("password")
    if password:
        handshake.append(("AUTH", username, password) if username else ("AUTH", password))
    if int(kwargs.get("db") or 0):
        handshake.append(("SELECT", int(kwargs["db"])))
    return _Settings(tls=tls, handshake=handshake, socket_timeout=socket_timeout, connect_timeout=connect_timeout)


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
        self._servers: dict[str, _Server] = {}
        self._cluster: RedisCluster | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._refresh_wanted = False
        self._cluster_ready = False
        self._closed = False
        if isinstance(client, RedisCluster):
            self._cluster = client
            manager = client.nodes_manager
            kwargs = dict(manager.connection_kwargs)
            self._settings = _settings_from(
                kwargs, kwargs.get("connection_class", object), socket_timeout, connect_timeout
            )
            # Cluster nodes have no databases: SELECT would fail there.
            self._settings.handshake = [c for c in self._settings.handshake if c[0] != "SELECT"]
            return
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        self._settings = _settings_from(kwargs, pool.connection_class, socket_timeout, connect_timeout)
        locate: Callable[[], Awaitable[Address]]
        if isinstance(pool, SentinelConnectionPool):
            sentinel_pool = pool

            async def master() -> Address:
                host, port = await cast(Any, sentinel_pool).get_master_address()
                return (str(host), int(port))

            locate = master
        elif issubclass(pool.connection_class, UnixDomainSocketConnection):
            path = str(kwargs["path"])

            async def unix() -> Address:
                return path

            locate = unix
        else:
            fixed = (str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379)))

            async def standalone() -> Address:
                return fixed

            locate = standalone
        self._servers[""] = _Server("", locate, self._settings)

    # Routing ---------------------------------------------------------------------------------
    def _server_named(self, name: str, host: str, port: int) -> _Server:
        server = self._servers.get(name)
        if server is None:
            address = (host, port)

            async def fixed() -> Address:
                return address

            server = self._servers[name] = _Server(name, fixed, self._settings)
        return server

    async def ready(self) -> None:
        """Cluster: read the slot map once before the first command."""
        if self._cluster is not None and not self._cluster_ready:
            await self._cluster.initialize()
            self._cluster_ready = True

    async def route(self, key: str | None) -> _Server:
        """The server that holds `key` (any master for None)."""
        cluster = self._cluster
        if cluster is None:
            return self._servers[""]
        if not self._cluster_ready:
            await self.ready()
        if self._refresh_wanted:
            await self.refresh()
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
    async def call(self, key: str | None, *command: Arg, idempotent: bool) -> Any:
        return await self._execute(key, _pack(command), None, idempotent)

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg], *, idempotent: bool) -> Any:
        payload = _pack(("EVALSHA", script.sha, len(keys), *keys, *args))
        return await self._execute(keys[0] if keys else None, payload, (script, keys, args), idempotent)

    async def ping(self) -> None:
        """PING the server (Cluster: every master)."""
        if self._cluster is None:
            await self.call(None, "PING", idempotent=True)
            return
        await self.ready()
        for node in self._cluster.nodes_manager.get_nodes_by_server_type("primary"):
            server = self._server_named(node.name, node.host, int(node.port))
            reply = await (await server.connection()).send(_pack(("PING",)))
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
        asking: _Server | None = None
        while True:
            if self._closed:
                raise rx.ConnectionError("the store is closed")
            written = False
            try:
                server = asking or await self.route(key)
                connection = await server.connection()
                if asking is not None:
                    connection.send(_pack(("ASKING",)))
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
                payload = _pack(("EVAL", source.text, len(keys), *keys, *args))
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
        for server in self._servers.values():
            server.close()
        self._servers.clear()
