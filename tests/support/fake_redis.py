"""Scripted Redis servers for the wire's fake-transport tests (tests/test_redis_fake_wire.py), for the
replies a live server will not send on demand: -TRYAGAIN, -LOADING, -MOVED/-ASK mid-migration,
-READONLY, half a reply and then a closed connection.

`FakeRedis.open` is a `connections.Opener`: give it as the `opener` of a `Wire` or a `RedisStore` and
every connection goes to the `FakeNode` at its address instead of a socket (an address with no node
refuses). A node answers what the test scripted: `expect(*command, reply=...)` answers the next command
that starts so, once, in the order scripted; `always(...)` answers every such command. Unscripted, the
connection setup (AUTH, SELECT, CLIENT SETNAME), ASKING and PING are answered as Redis would, and
(un)subscribe commands get their confirmations; anything else gets an error and is noted in
`unexpected`. Replies are RESP bytes (`resp`, `error`, `OK`), so they can be anything, half a reply
included; `drop=True` closes the connection after the reply.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import hiredis

from gateway.state.redis_clients import SLOTS, Address

Command: TypeAlias = tuple[str, ...]
Reply: TypeAlias = bytes | Callable[[], bytes]

_P = TypeVar("_P", bound=asyncio.Protocol)

OK = b"+OK\r\n"


def resp(value: Any) -> bytes:
    """`value` in RESP2: str and bytes as bulk strings, int, None (nil), lists as arrays."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    items = list(value)
    return b"*%d\r\n" % len(items) + b"".join(resp(item) for item in items)


def error(message: str) -> bytes:
    return b"-" + message.encode() + b"\r\n"


@dataclass
class _Script:
    command: Command
    reply: Reply
    drop: bool
    once: bool


class FakeConnection(asyncio.Transport):
    """One client connection to a `FakeNode`: what the client writes is parsed into commands for the
    node; what the node sends arrives in later loop turns, as from a socket."""

    def __init__(self, node: FakeNode, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.node = node
        self.protocol = protocol
        self.name = ""  # from CLIENT SETNAME
        self.received: list[Command] = []
        self.closed = False
        self._reader = hiredis.Reader(encoding="utf-8")
        self._loop = asyncio.get_running_loop()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default  # no socket to tune

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return
        self._reader.feed(bytes(data))
        while (command := self._reader.gets()) is not False:
            self.node.handle(self, tuple(str(part) for part in command))

    def send(self, data: bytes) -> None:
        """Bytes from the server (a reply, or a push)."""
        self._loop.call_soon(self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        if not self.closed:
            self.protocol.data_received(data)

    def drop(self) -> None:
        """The server closes the connection, after what it has sent."""
        self._loop.call_soon(self._lose)

    def abort(self) -> None:
        self._lose()

    def close(self) -> None:
        self._lose()

    def _lose(self) -> None:
        if not self.closed:
            self.closed = True
            self._loop.call_soon(self.protocol.connection_lost, None)


class FakeNode:
    """One scripted Redis server."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.name = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        self.connections: list[FakeConnection] = []
        self.received: list[Command] = []  # from every connection, in order
        self.unexpected: list[Command] = []
        self.refuse = False  # refuse new connections (the node is down)
        self._scripts: list[_Script] = []

    def expect(self, *command: str, reply: Reply, drop: bool = False) -> None:
        """Answer the next command that starts with `command` with `reply`, once."""
        self._scripts.append(_Script(command, reply, drop, once=True))

    def always(self, *command: str, reply: Reply) -> None:
        """Answer every command that starts with `command` (unless an `expect` comes first)."""
        self._scripts.append(_Script(command, reply, drop=False, once=False))

    def commands(self, name: str) -> list[Command]:
        """The commands named `name` received so far."""
        return [command for command in self.received if command[0].upper() == name.upper()]

    def push(self, data: bytes, *, to: str = "qrgate-pubsub") -> None:
        """Send `data` unasked to the open connections named `to` (the fan-out's, by default)."""
        for connection in self.connections:
            if connection.name == to and not connection.closed:
                connection.send(data)

    def handle(self, connection: FakeConnection, command: Command) -> None:
        self.received.append(command)
        connection.received.append(command)
        name = command[0].upper()
        if name == "CLIENT" and len(command) > 2 and command[1].upper() == "SETNAME":
            connection.name = command[2]
        for script in self._scripts:
            expected = script.command
            if (name, *command[1 : len(expected)]) == (expected[0].upper(), *expected[1:]):
                if script.once:
                    self._scripts.remove(script)
                connection.send(script.reply() if callable(script.reply) else script.reply)
                if script.drop:
                    connection.drop()
                return
        connection.send(self._unscripted(command))

    def _unscripted(self, command: Command) -> bytes:
        name = command[0].upper()
        if name in ("AUTH", "SELECT", "CLIENT", "ASKING"):
            return OK
        if name == "PING":
            return b"+PONG\r\n"
        if name in ("SUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE"):
            return b"".join(resp([name.lower(), channel, 1 if "UNSUB" not in name else 0]) for channel in command[1:])
        self.unexpected.append(command)
        return error(f"ERR the fake {self.name} did not expect {' '.join(command)}")


class FakeRedis:
    """The fake servers of one test, by address; `open` connects to them."""

    def __init__(self) -> None:
        self.nodes: dict[Address, FakeNode] = {}

    def node(self, address: Address) -> FakeNode:
        if address not in self.nodes:
            self.nodes[address] = FakeNode(address)
        return self.nodes[address]

    @property
    def unexpected(self) -> list[Command]:
        return [command for node in self.nodes.values() for command in node.unexpected]

    async def open(
        self, address: Address, protocol: Callable[[], _P], tls: ssl.SSLContext | None
    ) -> tuple[asyncio.BaseTransport, _P]:
        node = self.nodes.get(address)
        if node is None or node.refuse:
            raise ConnectionRefusedError(f"no fake Redis at {address}")
        made = protocol()
        connection = FakeConnection(node, made)
        node.connections.append(connection)
        made.connection_made(connection)
        return connection, made


class FakeCluster:
    """Fake Cluster masters whose CLUSTER SLOTS answer follows `owners` (one node per slot, spread
    evenly at first); `move` gives a slot to another node, as a finished migration does."""

    def __init__(self, fake: FakeRedis, ports: Sequence[int], host: str = "10.0.0.1") -> None:
        self.nodes = [fake.node((host, port)) for port in ports]
        share = -(-SLOTS // len(self.nodes))
        self.owners = [self.nodes[slot // share] for slot in range(SLOTS)]
        for node in self.nodes:
            node.always("CLUSTER", "SLOTS", reply=self.slots_reply)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(node.name for node in self.nodes)

    def owner(self, slot: int) -> FakeNode:
        return self.owners[slot]

    def other_than(self, node: FakeNode) -> FakeNode:
        return next(other for other in self.nodes if other is not node)

    def move(self, slot: int, to: FakeNode) -> None:
        self.owners[slot] = to

    def slots_reply(self) -> bytes:
        ranges: list[list[Any]] = []
        for slot, owner in enumerate(self.owners):
            if ranges and ranges[-1][2] is owner and ranges[-1][1] == slot - 1:
                ranges[-1][1] = slot
            else:
                ranges.append([slot, slot, owner])
        entries = []
        for start, end, owner in ranges:
            assert isinstance(owner.address, tuple)
            host, port = owner.address
            entries.append([start, end, [host, port, f"id-{port}"]])
        return resp(entries)

    @property
    def slots_asked(self) -> int:
        """CLUSTER SLOTS commands answered so far (all nodes)."""
        return sum(len(node.commands("CLUSTER")) for node in self.nodes)
