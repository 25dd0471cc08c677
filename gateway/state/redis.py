"""The production store: Redis through `redis.asyncio` (redis-py >= 8), standalone, Sentinel or Cluster.

URL forms accepted by `RedisStore.from_url` (and `client_factory`):

    redis://[[user]:password@]host[:port][/db][?option=value...]      standalone
    rediss://...                                                       standalone over TLS
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[?db=0&sentinel_password=...]
                                                                       Sentinel: the service's master
    redis+cluster://[[user]:password@]host:port[,host:port...]        Redis Cluster (any reachable nodes)
    rediss+cluster://...                                               Redis Cluster over TLS

Credentials in the URL are for the Redis servers; `sentinel_password` (and `sentinel_username`) are
for the Sentinels themselves. Every client gets explicit socket timeouts and a retry policy
(exponential backoff, a few attempts, on connection and timeout errors): redis-py has none by default.

Keys. Each QR session is one hash `qrgate:{qr:<id>}` and wakes its waiters on the shard channel
`qrgate:{qr:<id>}:wake`; the hash tag puts both in one Cluster slot, so the transition script may
write the one and SPUBLISH on the other. Generic data lives in `qrgate:{<key>}` (a hash), counters in
`qrgate:{<key>}:hits` and sets in `qrgate:{<key>}:members` (separate, as in the memory store; `delete`
removes the data and the counter). A refresh session is the hash `qrgate:{session:<sid>}` with its spent
refresh hashes in `qrgate:{session:<sid>}:spent`. Every key has a TTL.

Atomicity. Every write that must be atomic is one Lua script (one round trip, EVALSHA): a QR transition
checks the state, the expiry and the required fields, writes, keeps the TTL and publishes the wake-up;
`hit` is INCR + PEXPIRE NX; `take` is HGETALL + DEL; `put` replaces the whole hash and sets its TTL;
`rotate_refresh` checks the current and the spent refresh hashes and rotates or revokes.

Fan-out. Per store (one per process) there is one fan-out task, which owns the pub/sub connection
(standalone and Sentinel: exactly one; Cluster: one per master holding a subscribed channel, since
shard channels live on their slot's master, through the cluster client's `ClusterPubSub`) and a pump
per connection that only reads messages into the fan-out's queue. A waiter registers locally first;
the first local waiter of a channel makes the fan-out SSUBSCRIBE and waits for Redis to confirm, so a
state read that follows cannot miss a change; the last one to leave SUNSUBSCRIBEs. A message only sets
Events, so a slow client never stalls fan-out. When a pub/sub connection fails (or stays silent past
three health-check PINGs), the fan-out drops it, reconnects with capped exponential backoff
(0.05 s .. 2 s), re-subscribes every channel that still has local waiters and then wakes them all:
they read the state again, which is the truth, so nothing published during the gap is lost. The
pub/sub connections never retry by themselves (a silent reconnect would hide a gap).

Errors. Connection, timeout and cluster-availability errors become `StoreUnavailable` (503 with
Retry-After); the connection pools reconnect by themselves once Redis is back.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias, cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff

from gateway.qr.machine import Transition
from gateway.state.base import LocalWaiters, RotateOutcome, StoreUnavailable, Waiter

log = logging.getLogger("qrgate.state.redis")

RedisClient: TypeAlias = Redis | RedisCluster
ClientFactory: TypeAlias = Callable[[], RedisClient]

MAX_IN_FLIGHT = 64  # concurrent commands per process; more wait for a connection
DEFAULT_PREFIX = "qrgate"
SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 2.0
RETRIES = 3
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
HEALTH_INTERVAL = 5.0
CONFIRM_TIMEOUT = 2.0
EMPTY_MARK = "\x00"  # the only field of a stored empty mapping (Redis has no empty hashes)

UNAVAILABLE: tuple[type[BaseException], ...] = (
    rx.ConnectionError,  # also BusyLoadingError, MaxConnectionsError, MasterNotFoundError
    rx.TimeoutError,
    rx.ClusterError,  # ClusterDownError, MasterDownError
    rx.TryAgainError,
    rx.ReadOnlyError,  # a demoted master during a failover
    rx.RedisClusterException,  # no reachable node, slot not covered
    OSError,
)

# ---------------------------------------------------------------------------------------------
# Lua. KEYS name every key (and the channel) a script touches, so Cluster routes and checks them.

# KEYS: the hash, then keys to delete with it. ARGV: TTL in milliseconds, then field, value, ...
PUT_LUA = """
redis.call('DEL', unpack(KEYS))
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: the QR hash, its wake-up channel. ARGV: now, JSON list of the states it may start from,
# '1' when refused after expiry, JSON object of required fields, JSON object of updates, new state.
# Returns {1, fields after} when applied, {0, fields as they are} when refused, {-1, {}} when absent.
TRANSITION_LUA = """
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then return {-1, flat} end
local record = {}
for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
local allowed = false
for _, state in ipairs(cjson.decode(ARGV[2])) do
  if record['state'] == state then allowed = true end
end
if not allowed then return {0, flat} end
if ARGV[3] == '1' then
  local expires_at = tonumber(record['expires_at'])
  if expires_at == nil or tonumber(ARGV[1]) >= expires_at then return {0, flat} end
end
for name, value in pairs(cjson.decode(ARGV[4])) do
  if record[name] ~= value then return {0, flat} end
end
local args = {}
for name, value in pairs(cjson.decode(ARGV[5])) do
  args[#args + 1] = name
  args[#args + 1] = value
end
args[#args + 1] = 'state'
args[#args + 1] = ARGV[6]
redis.call('HSET', KEYS[1], unpack(args))
redis.call('SPUBLISH', KEYS[2], ARGV[6])
return {1, redis.call('HGETALL', KEYS[1])}
"""

# KEYS: the counter. ARGV: TTL in milliseconds, set by the first hit only.
HIT_LUA = """
local count = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1], 'NX')
return count
"""

# KEYS: the session hash, its set of spent refresh hashes.
# ARGV: the presented hash, the new hash, now, TTL in milliseconds.
ROTATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
if redis.call('HGET', KEYS[1], 'refresh_hash') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'refresh_hash', ARGV[2], 'last_used', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return {'rotated', redis.call('HGETALL', KEYS[1])}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {'reused'}
end
return {'unknown'}
"""

# KEYS: the session hash, its spent set. Returns 1 when the session existed.
END_SESSION_LUA = """
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return existed
"""

# KEYS: the set. ARGV: the member, TTL in milliseconds (extends the set's TTL, never shortens it).
ADD_MEMBER_LUA = """
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

TAKE_LUA = """
local flat = redis.call('HGETALL', KEYS[1])
if #flat > 0 then redis.call('DEL', KEYS[1]) end
return flat
"""


# ---------------------------------------------------------------------------------------------
# Clients from URLs


def default_retry(retries: int = RETRIES) -> Retry:
    return Retry(
        ExponentialBackoff(cap=0.5, base=0.05), retries, supported_errors=(rx.ConnectionError, rx.TimeoutError)
    )


def _hosts(netloc: str, default_port: int) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """`[user[:password]@]host:port,host:port` -> (user, password, [(host, port), ...])."""
    user: str | None = None
    password: str | None = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        name, _, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if secret else None
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            hosts.append((host, int(port) if port else default_port))
        except ValueError:
            raise ValueError(f"bad port in Redis URL host {item!r}") from None
    if not hosts:
        raise ValueError("the Redis URL names no host")
    return user, password, hosts


def _single(query: dict[str, list[str]], name: str) -> str | None:
    values = query.pop(name, None)
    return values[-1] if values else None


def client_factory(
    url: str,
    *,
    socket_timeout: float = SOCKET_TIMEOUT,
    socket_connect_timeout: float = CONNECT_TIMEOUT,
    retries: int = RETRIES,
    max_connections: int | None = None,
) -> ClientFactory:
    """A function that builds a new client for `url` each time it is called (see the module docs)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "socket_keepalive": True,
    }

    if scheme in ("redis", "rediss", "unix"):
        standalone = dict(common)
        if max_connections is not None:
            standalone["max_connections"] = max_connections

        def make_standalone() -> RedisClient:
            return Redis.from_url(url, retry=default_retry(retries), **standalone)

        return make_standalone

    query = parse_qs(parts.query)
    if scheme in ("redis+cluster", "rediss+cluster"):
        user, password, hosts = _hosts(parts.netloc, 6379)
        if query:
            raise ValueError(f"unsupported redis+cluster URL options: {sorted(query)}")
        cluster_kwargs = dict(common)
        if max_connections is not None:
            cluster_kwargs["max_connections"] = max_connections

        def make_cluster() -> RedisClient:
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in hosts],
                username=user,
                password=password,
                ssl=scheme == "rediss+cluster",
                retry=default_retry(retries),
                **cluster_kwargs,
            )

        return make_cluster

    if scheme == "redis+sentinel":
        user, password, hosts = _hosts(parts.netloc, 26379)
        service = parts.path.strip("/")
        if not service or "/" in service:
            raise ValueError("a redis+sentinel URL ends with /service_name")
        db = int(_single(query, "db") or 0)
        sentinel_password = _single(query, "sentinel_password")
        sentinel_username = _single(query, "sentinel_username")
        if query:
            raise ValueError(f"unsupported redis+sentinel URL options: {sorted(query)}")
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "decode_responses": True,
        }
        if sentinel_password is not None:
            sentinel_kwargs["password"] = sentinel_password
        if sentinel_username is not None:
            sentinel_kwargs["username"] = sentinel_username
        master_kwargs = dict(common, db=db, username=user, password=password)
        if max_connections is not None:
            master_kwargs["max_connections"] = max_connections

        def make_sentinel_master() -> RedisClient:
            sentinel = cast(Any, Sentinel)(hosts, sentinel_kwargs=sentinel_kwargs)
            return cast(Redis, sentinel.master_for(service, retry=default_retry(retries), **master_kwargs))

        return make_sentinel_master

    raise ValueError("the Redis URL must start with redis://, rediss://, redis+sentinel:// or redis+cluster://")


async def close_client(client: RedisClient) -> None:
    """Close a client and everything it owns (for Sentinel: the connections to the sentinels too)."""
    await client.aclose()
    if isinstance(client, Redis):
        pool = client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            for sentinel in cast(Sentinel, pool.sentinel_manager).sentinels:
                await sentinel.aclose()


# ---------------------------------------------------------------------------------------------
# Helpers


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _record(flat: Sequence[Any]) -> dict[str, str] | None:
    if not flat:
        return None
    record = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
    record.pop(EMPTY_MARK, None)
    return record


def _pairs(record: Mapping[str, str]) -> list[str]:
    if not record:
        return [EMPTY_MARK, ""]
    flat: list[str] = []
    for name, value in record.items():
        flat += (name, value)
    return flat


@contextlib.contextmanager
def _guard(operation: str) -> Iterator[None]:
    try:
        yield
    except UNAVAILABLE as exc:
        raise StoreUnavailable(f"The state store (Redis) is unavailable: {operation} failed.") from exc


# ---------------------------------------------------------------------------------------------
# Fan-out


class _Resync(Exception):
    """Redis dropped a subscription we still need (a slot moved): start over."""


class _SourceGone(Exception):
    """A per-shard pub/sub connection was retired (its last channel left)."""


Message: TypeAlias = dict[str, Any]
Reader: TypeAlias = Callable[[], Awaitable[Message | None]]


class _Link(abc.ABC):
    """One generation of pub/sub connections."""

    async def prepare(self, again: bool) -> None:
        """Get ready to route channels (after a failure: `again`)."""
        return None

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abc.abstractmethod
    def readers(self) -> list[tuple[object, Reader]]:
        """(identity, read one message) per live connection."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Ask every live connection for a reply; False when none is connected."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...


class _SingleLink(_Link):
    """Standalone and Sentinel: exactly one pub/sub connection (to the master)."""

    def __init__(self, client: Redis) -> None:
        self.pubsub: PubSub = client.pubsub()

    async def subscribe(self, channel: str) -> None:
        await self.pubsub.ssubscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.pubsub.sunsubscribe(channel)

    def readers(self) -> list[tuple[object, Reader]]:
        pubsub = self.pubsub
        if pubsub.connection is None:
            return []
        return [(pubsub, lambda: cast(Awaitable[Message | None], pubsub.get_message(timeout=None)))]

    async def ping(self) -> bool:
        if self.pubsub.connection is None:
            return False
        await self.pubsub.ping()
        return True

    async def aclose(self) -> None:
        await cast(Any, self.pubsub).aclose()


class _ClusterLink(_Link):
    """Sharded pub/sub through the cluster client's pubsub: one connection per master in use."""

    def __init__(self, client: RedisCluster) -> None:
        self.cluster = client
        self.cluster_pubsub: ClusterPubSub = client.pubsub()

    async def prepare(self, again: bool) -> None:
        await self.cluster.initialize()
        if again:  # the topology may have changed: read it again before routing channels
            await self.cluster.nodes_manager.initialize()

    async def subscribe(self, channel: str) -> None:
        await self.cluster_pubsub.ssubscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.cluster_pubsub.sunsubscribe(channel)

    def readers(self) -> list[tuple[object, Reader]]:
        found: list[tuple[object, Reader]] = []
        for name, pubsub in list(self.cluster_pubsub.node_pubsub_mapping.items()):
            node = self.cluster.get_node(node_name=name)
            if node is not None and pubsub.connection is not None:
                found.append((pubsub, self._reader(pubsub, node)))
        return found

    def _reader(self, pubsub: PubSub, node: ClusterNode) -> Reader:
        async def read() -> Message | None:
            if self.cluster_pubsub.node_pubsub_mapping.get(node.name) is not pubsub:
                raise _SourceGone
            # timeout=None blocks until a message arrives (the annotation says float; None is allowed)
            pubsub_any = cast(Any, self.cluster_pubsub)
            return cast(Message | None, await pubsub_any.get_sharded_message(timeout=None, target_node=node))

        return read

    async def ping(self) -> bool:
        pinged = False
        for pubsub in list(self.cluster_pubsub.node_pubsub_mapping.values()):
            if pubsub.connection is not None:
                await pubsub.ping()
                pinged = True
        return pinged

    async def aclose(self) -> None:
        await self.cluster_pubsub.aclose()


class _Subscription:
    __slots__ = ("confirmed",)

    def __init__(self) -> None:
        self.confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def settle(self) -> None:
        if not self.confirmed.done():
            self.confirmed.set_result(None)


class _Generation:
    """The fan-out's state for one set of pub/sub connections; thrown away whole when one fails."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.events: asyncio.Queue[tuple[Message | None, BaseException | None]] = asyncio.Queue()
        self.lock = asyncio.Lock()  # serialises (un)subscribe commands and their bookkeeping
        self.subs: dict[str, _Subscription] = {}
        self.sent_sub: Counter[str] = Counter()
        self.sent_unsub: Counter[str] = Counter()
        self.pumps: dict[int, asyncio.Task[None]] = {}
        self.resubscribing: set[str] = set()
        self.broken = False
        self.heard = False
        self.last_heard = time.monotonic()

    def fail(self, error: BaseException) -> None:
        if not self.broken:
            self.broken = True
            self.events.put_nowait((None, error))


class Fanout:
    """The process's single pub/sub reader for one store (see the module docs)."""

    def __init__(
        self,
        client: RedisClient,
        waiters: LocalWaiters,
        *,
        health_interval: float = HEALTH_INTERVAL,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX),
    ) -> None:
        self._client = client
        self._waiters = waiters
        self._health_interval = health_interval
        self._confirm_timeout = confirm_timeout
        self._backoff = backoff
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
        self._start_pumps(generation)
        return sub

    async def _unsubscribe(self, generation: _Generation, channel: str) -> None:
        async with generation.lock:
            if generation.broken or channel in self._active:
                return
            sub = generation.subs.pop(channel, None)
            if sub is None:
                return
            sub.settle()
            generation.sent_unsub[channel] += 1
            try:
                await generation.link.unsubscribe(channel)
            except Exception as exc:
                generation.fail(exc)

    # The reader ------------------------------------------------------------------------------
    def _start_pumps(self, generation: _Generation) -> None:
        for source, read in generation.link.readers():
            key = id(source)
            if key not in generation.pumps:
                generation.pumps[key] = asyncio.create_task(self._pump(generation, key, read))

    async def _pump(self, generation: _Generation, key: int, read: Reader) -> None:
        try:
            while True:
                message = await read()
                generation.events.put_nowait((message, None))
        except _SourceGone:
            pass
        except Exception as exc:
            generation.fail(exc)
        finally:
            generation.pumps.pop(key, None)

    async def _run(self) -> None:
        delay = self._backoff[0]
        again = False
        while True:
            generation = _Generation(self._new_link())
            self._generation = generation
            try:
                await self._populate(generation, again)
                self._started.set()
                await self._serve(generation)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if generation.heard:
                    delay = self._backoff[0]
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
            delay = min(delay * 2, self._backoff[1])

    def _new_link(self) -> _Link:
        if isinstance(self._client, RedisCluster):
            return _ClusterLink(self._client)
        return _SingleLink(self._client)

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

    async def _serve(self, generation: _Generation) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that coincides with the result, and close() would then wait for ever.
                async with asyncio.timeout(self._health_interval):
                    message, error = await generation.events.get()
            except TimeoutError:
                await self._check_health(generation)
                continue
            if error is not None:
                raise error
            generation.last_heard = time.monotonic()
            if message is not None:
                generation.heard = True
                self._handle(generation, message)

    async def _check_health(self, generation: _Generation) -> None:
        silent = time.monotonic() - generation.last_heard
        if silent > 3 * self._health_interval:
            raise rx.TimeoutError(f"no reply on the pub/sub connection for {silent:.1f}s")
        if not await generation.link.ping():
            generation.last_heard = time.monotonic()  # nothing connected: nothing to hear

    def _handle(self, generation: _Generation, message: Message) -> None:
        kind = _text(message.get("type"))
        channel = _text(message.get("channel"))
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
        pumps = list(generation.pumps.values())
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        try:
            await generation.link.aclose()
        except Exception as exc:
            log.debug("closing a pub/sub connection failed: %r", exc)


# ---------------------------------------------------------------------------------------------
# The store


class RedisStore:
    """`StateStore` on Redis. `connect` builds a client (it is called twice: one client for commands,
    one for the fan-out, whose connections must not retry by themselves), or is a URL."""

    def __init__(
        self,
        connect: ClientFactory | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        health_interval: float = HEALTH_INTERVAL,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX),
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        factory = client_factory(connect, max_connections=max_in_flight + 8) if isinstance(connect, str) else connect
        # redis-py's pools raise MaxConnectionsError when exhausted: commands queue here instead.
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.prefix = prefix
        self.client: RedisClient = factory()
        fanout_client = factory()
        if isinstance(fanout_client, Redis):
            fanout_client.set_retry(Retry(NoBackoff(), 0))
        self._fanout_client = fanout_client
        self.waiters = LocalWaiters()
        self.fanout = Fanout(
            fanout_client,
            self.waiters,
            health_interval=health_interval,
            confirm_timeout=confirm_timeout,
            backoff=backoff,
        )
        self._put = self.client.register_script(PUT_LUA)
        self._transition = self.client.register_script(TRANSITION_LUA)
        self._hit = self.client.register_script(HIT_LUA)
        self._take = self.client.register_script(TAKE_LUA)
        self._rotate = self.client.register_script(ROTATE_LUA)
        self._end_session = self.client.register_script(END_SESSION_LUA)
        self._add_member = self.client.register_script(ADD_MEMBER_LUA)
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = SOCKET_TIMEOUT,
        socket_connect_timeout: float = CONNECT_TIMEOUT,
        retries: int = RETRIES,
        max_in_flight: int = MAX_IN_FLIGHT,
        prefix: str = DEFAULT_PREFIX,
        health_interval: float = HEALTH_INTERVAL,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX),
    ) -> RedisStore:
        factory = client_factory(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            retries=retries,
            max_connections=max_in_flight + 8,
        )
        return cls(
            factory,
            prefix=prefix,
            health_interval=health_interval,
            confirm_timeout=confirm_timeout,
            backoff=backoff,
            max_in_flight=max_in_flight,
        )

    # Keys ------------------------------------------------------------------------------------
    def qr_key(self, qr_id: str) -> str:
        return f"{self.prefix}:{{qr:{qr_id}}}"

    def qr_channel(self, qr_id: str) -> str:
        return f"{self.prefix}:{{qr:{qr_id}}}:wake"

    def data_key(self, key: str) -> str:
        return f"{self.prefix}:{{{key}}}"

    def counter_key(self, key: str) -> str:
        return f"{self.prefix}:{{{key}}}:hits"

    def set_key(self, key: str) -> str:
        return f"{self.prefix}:{{{key}}}:members"

    def session_keys(self, sid: str) -> list[str]:
        """The session hash (the data key `session:<sid>`, as in the memory store) and its spent set."""
        session = self.data_key("session:" + sid)
        return [session, session + ":spent"]

    @asynccontextmanager
    async def _command(self, operation: str) -> AsyncIterator[None]:
        async with self._in_flight:
            with _guard(operation):
                yield

    async def _ready(self) -> None:
        # redis-py 8.1's RedisCluster initialises lazily on the first command, and concurrent first
        # commands race (they close connections that others are using): initialise it explicitly.
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()

    # Life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.fanout.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.fanout.close()
        for client in (self.client, self._fanout_client):
            try:
                await close_client(client)
            except Exception as exc:
                log.debug("closing a redis client failed: %r", exc)

    async def ping(self) -> None:
        async with self._command("ping"):
            await self._ready()
            await cast(Awaitable[Any], self.client.ping())

    # QR sessions -----------------------------------------------------------------------------
    async def create_qr(self, qr_id: str, record: Mapping[str, str], ttl: int) -> None:
        async with self._command("create_qr"):
            await self._ready()
            await self._put(keys=[self.qr_key(qr_id)], args=[_ms(ttl), *_pairs(record)])

    async def get_qr(self, qr_id: str) -> dict[str, str] | None:
        return await self._hgetall(self.qr_key(qr_id), "get_qr")

    async def transition_qr(self, qr_id: str, transition: Transition, now: float) -> tuple[bool, dict[str, str] | None]:
        args = [
            repr(float(now)),
            json.dumps(sorted(state.value for state in transition.from_states)),
            "1" if transition.before_expiry else "0",
            json.dumps(dict(transition.require), ensure_ascii=False),
            json.dumps(dict(transition.updates), ensure_ascii=False),
            transition.to_state.value,
        ]
        async with self._command("transition_qr"):
            await self._ready()
            status, flat = await self._transition(keys=[self.qr_key(qr_id), self.qr_channel(qr_id)], args=args)
        return int(status) == 1, _record(flat)

    def subscribe(self, qr_id: str) -> AbstractAsyncContextManager[Waiter]:
        return self._waiting(self.qr_channel(qr_id))

    @asynccontextmanager
    async def _waiting(self, channel: str) -> AsyncIterator[Waiter]:
        waiter = Waiter()
        try:
            await self.fanout.join(channel, waiter)
            yield waiter
        finally:
            self.fanout.leave(channel, waiter)

    # Refresh sessions ------------------------------------------------------------------------------
    async def create_session(self, sid: str, session: Mapping[str, str], ttl: int) -> None:
        async with self._command("create_session"):
            await self._ready()
            await self._put(keys=self.session_keys(sid), args=[_ms(ttl), *_pairs(session)])

    async def get_session(self, sid: str) -> dict[str, str] | None:
        return await self._hgetall(self.session_keys(sid)[0], "get_session")

    async def rotate_refresh(
        self, sid: str, presented_hash: str, new_hash: str, now: float, ttl: int
    ) -> tuple[RotateOutcome, dict[str, str] | None]:
        async with self._command("rotate_refresh"):
            await self._ready()
            reply = await self._rotate(
                keys=self.session_keys(sid), args=[presented_hash, new_hash, repr(float(now)), _ms(ttl)]
            )
        outcome = _text(reply[0])
        if outcome == "rotated":
            return "rotated", _record(reply[1])
        if outcome == "reused":
            return "reused", None
        return "unknown", None

    async def end_session(self, sid: str) -> bool:
        async with self._command("end_session"):
            await self._ready()
            return int(await self._end_session(keys=self.session_keys(sid))) == 1

    async def add_member(self, key: str, member: str, ttl: int) -> None:
        async with self._command("add_member"):
            await self._ready()
            await self._add_member(keys=[self.set_key(key)], args=[member, _ms(ttl)])

    async def members(self, key: str) -> set[str]:
        async with self._command("members"):
            await self._ready()
            found = await cast(Awaitable[set[Any]], self.client.smembers(self.set_key(key)))
        return {_text(member) for member in found}

    async def remove_member(self, key: str, member: str) -> None:
        async with self._command("remove_member"):
            await self._ready()
            await cast(Awaitable[Any], self.client.srem(self.set_key(key), member))

    # Generic expiring data ---------------------------------------------------------------------
    async def hit(self, key: str, ttl: int) -> int:
        async with self._command("hit"):
            await self._ready()
            return int(await self._hit(keys=[self.counter_key(key)], args=[_ms(ttl)]))

    async def put(self, key: str, value: Mapping[str, str], ttl: int) -> None:
        async with self._command("put"):
            await self._ready()
            await self._put(keys=[self.data_key(key)], args=[_ms(ttl), *_pairs(value)])

    async def get(self, key: str) -> dict[str, str] | None:
        return await self._hgetall(self.data_key(key), "get")

    async def take(self, key: str) -> dict[str, str] | None:
        async with self._command("take"):
            await self._ready()
            flat = await self._take(keys=[self.data_key(key)])
        return _record(flat)

    async def delete(self, key: str) -> None:
        async with self._command("delete"):
            await self._ready()
            await cast(Awaitable[Any], self.client.delete(self.data_key(key), self.counter_key(key)))

    async def _hgetall(self, key: str, operation: str) -> dict[str, str] | None:
        async with self._command(operation):
            await self._ready()
            found = await cast(Awaitable[dict[Any, Any]], self.client.hgetall(key))
        if not found:
            return None
        record = {_text(name): _text(value) for name, value in found.items()}
        record.pop(EMPTY_MARK, None)
        return record
