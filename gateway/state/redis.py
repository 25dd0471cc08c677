"""The production store: Redis through `redis.asyncio` (redis-py >= 8), standalone, Sentinel or Cluster.
Clients and URL forms are in `redis_clients`, the fan-out of wake-ups in `fanout`.

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

Errors. Connection, timeout and cluster-availability errors become `StoreUnavailable` (503 with
Retry-After); the connection pools reconnect by themselves once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.qr.machine import Transition
from gateway.state.base import LocalWaiters, RotateOutcome, StoreUnavailable, Waiter
from gateway.state.fanout import BACKOFF_MAX, BACKOFF_MIN, CONFIRM_TIMEOUT, HEALTH_INTERVAL, Fanout
from gateway.state.redis_clients import (
    CONNECT_TIMEOUT,
    RETRIES,
    SOCKET_TIMEOUT,
    UNAVAILABLE,
    ClientFactory,
    RedisClient,
    client_factory,
    close_client,
    text_of,
)

log = logging.getLogger("qrgate.state.redis")

MAX_IN_FLIGHT = 64  # concurrent commands per process; more wait for a connection
DEFAULT_PREFIX = "qrgate"
EMPTY_MARK = "\x00"  # the only field of a stored empty mapping (Redis has no empty hashes)

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
# Helpers


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _record(flat: Sequence[Any]) -> dict[str, str] | None:
    if not flat:
        return None
    record = {text_of(flat[i]): text_of(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
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
        outcome = text_of(reply[0])
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
        return {text_of(member) for member in found}

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
        record = {text_of(name): text_of(value) for name, value in found.items()}
        record.pop(EMPTY_MARK, None)
        return record
