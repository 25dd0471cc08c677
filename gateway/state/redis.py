"""The production store: Redis, standalone, Sentinel or Cluster. Clients and URL forms are in
`redis_clients` (redis-py, `redis.asyncio`), the command path in `wire` (auto-pipelined connections),
the fan-out of wake-ups in `fanout`.

Keys. Each QR session is one hash `qrgate:{qr:<id>}` and wakes its waiters on the shard channel
`qrgate:{qr:<id>}:wake`; the hash tag puts both in one Cluster slot, so the transition script may
write the one and SPUBLISH on the other. Generic data lives in `qrgate:{<key>}` (a hash), counters in
`qrgate:{<key>}:hits` and sets in `qrgate:{<key>}:members` (separate, as in the memory store; `delete`
removes the data and the counter). A refresh session is the hash `qrgate:{session:<sid>}` with its spent
refresh hashes in `qrgate:{session:<sid>}:spent`. Every key has a TTL.

Atomicity. Every write that must be atomic is one Lua script (one round trip, EVALSHA): a QR transition
checks the state, the expiry and the required fields, writes, keeps the TTL and publishes the wake-up;
`hit` is INCR + PEXPIRE NX; `take` is HGETALL + DEL; `put` replaces the whole hash and sets its TTL;
`rotate_refresh` checks the current and the spent refresh hashes and rotates or revokes. Each call says
whether repeating it is harmless (`idempotent`): only those are sent again after a lost connection.

Errors. Connection, timeout and cluster-availability errors become `StoreUnavailable` (503 with
Retry-After); the wire connects again on the next command once Redis is back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from gateway.jsonutil import dumps
from gateway.state.base import LocalWaiters, RotateOutcome, StoreUnavailable, Waiter
from gateway.state.connections import Arg
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
from gateway.state.updates import ConditionalUpdate
from gateway.state.wire import Script, Wire

log = logging.getLogger("qrgate.state.redis")

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


PUT = Script(PUT_LUA)
TRANSITION = Script(TRANSITION_LUA)
HIT = Script(HIT_LUA)
ROTATE = Script(ROTATE_LUA)
END_SESSION = Script(END_SESSION_LUA)
ADD_MEMBER = Script(ADD_MEMBER_LUA)
TAKE = Script(TAKE_LUA)

# ---------------------------------------------------------------------------------------------
# Helpers


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _record(flat: Sequence[Any]) -> dict[str, str] | None:
    if not flat:
        return None
    record = dict(zip(flat[::2], flat[1::2], strict=True))  # str already (the wire decodes UTF-8)
    record.pop(EMPTY_MARK, None)
    return record


def _pairs(record: Mapping[str, str]) -> list[str]:
    if not record:
        return [EMPTY_MARK, ""]
    flat: list[str] = []
    for name, value in record.items():
        flat += (name, value)
    return flat


class _Guard:
    """`with _Guard("operation"):` turns Redis being unreachable into StoreUnavailable (503)."""

    __slots__ = ("operation",)

    def __init__(self, operation: str) -> None:
        self.operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and isinstance(exc, UNAVAILABLE):
            raise StoreUnavailable(f"The state store (Redis) is unavailable: {self.operation} failed.") from exc


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
        socket_timeout: float = SOCKET_TIMEOUT,
        socket_connect_timeout: float = CONNECT_TIMEOUT,
        retries: int = RETRIES,
    ) -> None:
        factory = client_factory(connect) if isinstance(connect, str) else connect
        self.prefix = prefix
        self.client: RedisClient = factory()
        # Commands and pub/sub go through the auto-pipelined wire; the redis-py client gives it its
        # settings, the Sentinel's master and the Cluster's slot map.
        self.wire = Wire(
            self.client, socket_timeout=socket_timeout, connect_timeout=socket_connect_timeout, retries=retries
        )
        self.waiters = LocalWaiters()
        self.fanout = Fanout(
            self.wire,
            self.waiters,
            health_interval=health_interval,
            confirm_timeout=confirm_timeout,
            backoff=backoff,
        )
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = SOCKET_TIMEOUT,
        socket_connect_timeout: float = CONNECT_TIMEOUT,
        retries: int = RETRIES,
        prefix: str = DEFAULT_PREFIX,
        health_interval: float = HEALTH_INTERVAL,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX),
    ) -> RedisStore:
        factory = client_factory(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout, retries=retries
        )
        return cls(
            factory,
            prefix=prefix,
            health_interval=health_interval,
            confirm_timeout=confirm_timeout,
            backoff=backoff,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            retries=retries,
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

    # Life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.wire.start()
        self.fanout.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.fanout.close()
        await self.wire.close()
        try:
            await close_client(self.client)
        except Exception as exc:
            log.debug("closing a redis client failed: %r", exc)

    async def ping(self) -> None:
        with _Guard("ping"):
            await self.wire.ping()

    # QR sessions -----------------------------------------------------------------------------
    async def create_qr(self, qr_id: str, record: Mapping[str, str], ttl: int) -> None:
        with _Guard("create_qr"):
            await self.wire.script(PUT, [self.qr_key(qr_id)], [_ms(ttl), *_pairs(record)], idempotent=True)

    async def get_qr(self, qr_id: str) -> dict[str, str] | None:
        return await self._hgetall(self.qr_key(qr_id), "get_qr")

    async def transition_qr(
        self, qr_id: str, update: ConditionalUpdate, now: float
    ) -> tuple[bool, dict[str, str] | None]:
        args: list[Arg] = [
            repr(float(now)),
            dumps(sorted(update.from_states)),
            "1" if update.before_expiry else "0",
            dumps(dict(update.require)),
            dumps(dict(update.updates)),
            update.to_state,
        ]
        with _Guard("transition_qr"):
            keys = [self.qr_key(qr_id), self.qr_channel(qr_id)]
            status, flat = await self.wire.script(TRANSITION, keys, args, idempotent=False)
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
        with _Guard("create_session"):
            await self.wire.script(PUT, self.session_keys(sid), [_ms(ttl), *_pairs(session)], idempotent=True)

    async def get_session(self, sid: str) -> dict[str, str] | None:
        return await self._hgetall(self.session_keys(sid)[0], "get_session")

    async def rotate_refresh(
        self, sid: str, presented_hash: str, new_hash: str, now: float, ttl: int
    ) -> tuple[RotateOutcome, dict[str, str] | None]:
        with _Guard("rotate_refresh"):
            args: list[Arg] = [presented_hash, new_hash, repr(float(now)), _ms(ttl)]
            reply = await self.wire.script(ROTATE, self.session_keys(sid), args, idempotent=False)
        outcome = text_of(reply[0])
        if outcome == "rotated":
            return "rotated", _record(reply[1])
        if outcome == "reused":
            return "reused", None
        return "unknown", None

    async def end_session(self, sid: str) -> bool:
        with _Guard("end_session"):
            return int(await self.wire.script(END_SESSION, self.session_keys(sid), [], idempotent=False)) == 1

    async def add_member(self, key: str, member: str, ttl: int) -> None:
        with _Guard("add_member"):
            await self.wire.script(ADD_MEMBER, [self.set_key(key)], [member, _ms(ttl)], idempotent=True)

    async def members(self, key: str) -> set[str]:
        with _Guard("members"):
            found = await self.wire.call(self.set_key(key), "SMEMBERS", self.set_key(key), idempotent=True)
        return {text_of(member) for member in found}

    async def remove_member(self, key: str, member: str) -> None:
        with _Guard("remove_member"):
            await self.wire.call(self.set_key(key), "SREM", self.set_key(key), member, idempotent=True)

    # Generic expiring data ---------------------------------------------------------------------
    async def hit(self, key: str, ttl: int) -> int:
        with _Guard("hit"):
            return int(await self.wire.script(HIT, [self.counter_key(key)], [_ms(ttl)], idempotent=False))

    async def put(self, key: str, value: Mapping[str, str], ttl: int) -> None:
        with _Guard("put"):
            await self.wire.script(PUT, [self.data_key(key)], [_ms(ttl), *_pairs(value)], idempotent=True)

    async def get(self, key: str) -> dict[str, str] | None:
        return await self._hgetall(self.data_key(key), "get")

    async def take(self, key: str) -> dict[str, str] | None:
        with _Guard("take"):
            flat = await self.wire.script(TAKE, [self.data_key(key)], [], idempotent=False)
        return _record(flat)

    async def delete(self, key: str) -> None:
        with _Guard("delete"):
            keys = (self.data_key(key), self.counter_key(key))
            await self.wire.call(keys[0], "DEL", *keys, idempotent=True)

    async def _hgetall(self, key: str, operation: str) -> dict[str, str] | None:
        with _Guard(operation):
            flat = await self.wire.call(key, "HGETALL", key, idempotent=True)
        return _record(flat)
