"""Connections to Redis for the store (`wire`) and the fan-out: asyncio protocols that write
commands in batches and parse replies with hiredis as they arrive (see `wire` for why).

`Connection` matches replies to commands in order, with a watchdog that closes it when a command
waits longer than `socket_timeout`; `PubSubConnection` passes what Redis pushes to a callback.
`Server` is one address's command connection, made on first use and again after a failure.

Every connection's transport comes from the `Opener` in its `ConnectionSettings`: `open_socket` (TCP,
TLS or a Unix socket) in production. It is the seam for tests that need replies a live server will not
send on demand (tests/support/fake_redis.py): they pass an opener whose transports are scripted.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar, cast

import hiredis

from gateway.state.redis_clients import Address, RedisTarget
from gateway.state.redis_clients import exceptions as rx

Arg: TypeAlias = str | int | float | bytes

_C = TypeVar("_C", bound="Connection")
_P = TypeVar("_P", bound=asyncio.Protocol)

# hiredis packs commands in C; its stub types the argument as a 1-tuple
pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)


class Opener(Protocol):
    """Connects `protocol()` to `address` (over TLS when `tls` is given), as `loop.create_connection` does."""

    def __call__(
        self, address: Address, protocol: Callable[[], _P], tls: ssl.SSLContext | None
    ) -> Awaitable[tuple[asyncio.BaseTransport, _P]]: ...


async def open_socket(
    address: Address, protocol: Callable[[], _P], tls: ssl.SSLContext | None
) -> tuple[asyncio.BaseTransport, _P]:
    """The production `Opener`: a Unix socket for a path, else TCP (with TLS when asked)."""
    loop = asyncio.get_running_loop()
    if isinstance(address, str):
        return await loop.create_unix_connection(protocol, address)
    host, port = address
    return await loop.create_connection(
        protocol, host, port, ssl=tls, server_hostname=host if tls is not None else None
    )


class Connection(asyncio.Protocol):
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


class PubSubConnection(Connection):
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
        self._queue(pack(command))


def fixed_address(address: Address) -> Callable[[], Awaitable[Address]]:
    """A `locate` for a server that does not move (standalone, a Cluster node, a Sentinel)."""

    async def locate() -> Address:
        return address

    return locate


async def open_connection(
    locate: Callable[[], Awaitable[Address]], settings: ConnectionSettings, kind: type[_C], client_name: str | None
) -> _C:
    """Connect, then authenticate, select the database and name the connection."""
    connection: _C | None = None
    try:
        address = await locate()
        name = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        async with asyncio.timeout(settings.connect_timeout):
            _, connection = await settings.opener(address, lambda: kind(name, settings.socket_timeout), settings.tls)
            setup = [*settings.handshake, *([("CLIENT", "SETNAME", client_name)] if client_name else [])]
            for reply in await asyncio.gather(*(connection.send(pack(command)) for command in setup)):
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


class Server:
    """Where one connection goes, connected on first use and again after a failure."""

    def __init__(self, name: str, locate: Callable[[], Awaitable[Address]], settings: ConnectionSettings) -> None:
        self.name = name
        self._locate = locate
        self._settings = settings
        self._connection: Connection | None = None
        self._connecting: asyncio.Task[Connection] | None = None
        self.connects = 0  # connections made (more than one: reconnects)

    @property
    def connected(self) -> Connection | None:
        """The open connection, if there is one (else `connection()` makes one)."""
        connection = self._connection
        return connection if connection is not None and not connection.closed else None

    async def connection(self) -> Connection:
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Task[Connection]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._connection = task.result()
            self.connects += 1

    async def _connect(self) -> Connection:
        return await open_connection(self._locate, self._settings, Connection, "qrgate")

    async def open_pubsub(self) -> PubSubConnection:
        """A new connection of its own to the same server, for pub/sub."""
        return await open_connection(self._locate, self._settings, PubSubConnection, "qrgate-pubsub")

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
class ConnectionSettings:
    tls: ssl.SSLContext | None
    handshake: list[tuple[Arg, ...]]  # AUTH, SELECT
    socket_timeout: float
    connect_timeout: float
    opener: Opener = field(default=open_socket)


def connection_settings(
    *,
    username: str | None,
    password: str | None,
    db: int,
    tls: ssl.SSLContext | None,
    socket_timeout: float,
    connect_timeout: float,
    opener: Opener,
) -> ConnectionSettings:
    handshake: list[tuple[Arg, ...]] = []
    if password:
        handshake.append(("AUTH", username, password) if username else ("AUTH", password))
    if db:
        handshake.append(("SELECT", db))
    return ConnectionSettings(
        tls=tls, handshake=handshake, socket_timeout=socket_timeout, connect_timeout=connect_timeout, opener=opener
    )


def server_settings(
    target: RedisTarget, *, socket_timeout: float, connect_timeout: float, opener: Opener
) -> ConnectionSettings:
    """How to connect to the target's Redis servers (standalone, the Sentinel's master, Cluster nodes)."""
    return connection_settings(
        username=target.username,
        password=target.password,
        db=0 if target.kind == "cluster" else target.db,  # Cluster nodes have no databases: SELECT would fail
        tls=target.tls.context() if target.tls is not None else None,
        socket_timeout=socket_timeout,
        connect_timeout=connect_timeout,
        opener=opener,
    )


def sentinel_settings(
    target: RedisTarget, *, socket_timeout: float, connect_timeout: float, opener: Opener
) -> ConnectionSettings:
    """How to connect to the target's Sentinels (their own credentials, no database, no TLS)."""
    return connection_settings(
        username=target.sentinel_username,
        password=target.sentinel_password,
        db=0,
        tls=None,
        socket_timeout=socket_timeout,
        connect_timeout=connect_timeout,
        opener=opener,
    )
