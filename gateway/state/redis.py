"""The production store: Redis, standalone, Sentinel or Cluster. URL forms (and all of redis-py) are in
`redis_clients`, the command path in `wire` (auto-pipelined connections), the fan-out of wake-ups in
`fanout`.

Keys. Each QR session is one hash `qrgate:{qr:<id>}` and wakes its waiters on the shard channel
`qrgate:{qr:<id>}:wake`; the hash tag puts both in one Cluster slot, so the transition script may
write the one and SPUBLISH on the other. Generic data lives in `qrgate:{<key>}` (a hash), counters in
`qrgate:{<key>}:hits` and sets in `qrgate:{<key>}:members` (separate, as in the memory store; `delete`
removes the data and the counter). A refresh session is the hash `qrgate:{session:<sid>}` with its spent
refresh hashes in `qrgate:{session:<sid>}:spent`; a queue of delayed work is `qrgate:{<queue>}:due` (a
sorted set of due times) with `qrgate:{<queue>}:items` (the payloads). Every key has a TTL.

Atomicity. Every write that must be atomic is one Lua script (one round trip, EVALSHA): a QR transition
checks the state, the expiry and the required fields, writes, keeps the TTL and publishes the wake-up;
`hit` is INCR + PEXPIRE NX; `take` is HGETALL + DEL; `put` replaces the whole hash and sets its TTL;
`rotate_refresh` checks the current and the spent refresh hashes and rotates or revokes; a queue's
`claim_due` takes the due items and leases them in one step. Each call says
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
from gateway.state import attempts, keys
from gateway.state.base import LiveOutcome, LocalWaiters, RotateOutcome, StoreUnavailable, Waiter
from gateway.state.connections import Arg, Opener, open_socket
from gateway.state.fanout import CONFIRM_TIMEOUT, HEALTH_INTERVAL, Fanout
from gateway.state.redis_clients import (
    CONNECT_TIMEOUT,
    RETRIES,
    SOCKET_TIMEOUT,
    UNAVAILABLE,
    Backoff,
    RedisTarget,
    parse_redis_url,
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

# KEYS: the sorted set of all live entries, the group's (one slot: the hash tag {qr-live}), scored by
# when they lapse. ARGV: now, expires_at, member, group max, total max, TTL of both sets in milliseconds.
RESERVE_LIVE_LUA = """
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 'reserved' end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then return 'store_full' end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 'group_full' end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[6]) then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 'reserved'
"""

# KEYS: as RESERVE_LIVE_LUA. ARGV: the member.
RELEASE_LIVE_LUA = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: the feed's stream, its wake-up channel. ARGV: the entry, retention in milliseconds. Returns the
# entry's id (the cursor). Entries older than the retention are trimmed (approximately), by Redis's clock.
FEED_APPEND_LUA = """
local t = redis.call('TIME')
local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
local id = redis.call('XADD', KEYS[1], 'MINID', '~', tostring(oldest), '*', 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SPUBLISH', KEYS[2], id)
return id
"""

TAKE_LUA = """
local flat = redis.call('HGETALL', KEYS[1])
if #flat > 0 then redis.call('DEL', KEYS[1]) end
return flat
"""

# Delayed work. KEYS: the queue's sorted set (item id by due time), its hash (item id -> payload).
# ARGV: item id, payload, due, limit, TTL (ms). Returns 1 when queued (or queued already), 0 when full.
ENQUEUE_LUA = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 1 end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""

# KEYS: as ENQUEUE_LUA. ARGV: now, now + lease, count. Returns id, payload, id, payload, ...
CLAIM_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
for _, id in ipairs(due) do
  local payload = redis.call('HGET', KEYS[2], id)
  if payload then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = payload
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return claimed
"""

# KEYS: as ENQUEUE_LUA. ARGV: item id, payload, due.
RESCHEDULE_LUA = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

# KEYS: as ENQUEUE_LUA. ARGV: item id.
FINISH_LUA = """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('HDEL', KEYS[2], ARGV[1])
"""

# Guarded attempts: the decisions of gateway/state/attempts.py (`admit`, `settle`), in one script each.
# KEYS: the subject's record hash, its sorted set of attempts in flight (scored by when their place lapses).
# ARGV: now, attempt id, captcha check, max failures, reservation (s), '1' when a captcha rule applies,
# reservation (ms). Returns {admission, locked_until[, 1 when admitted with a captcha due]}.
ADMIT_LUA = """
local now = tonumber(ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'failures', 'failures_until', 'locked_until', 'captcha_until')
if (tonumber(r[3]) or 0) > now then return {'locked', r[3]} end
local failures = tonumber(r[1]) or 0
if (tonumber(r[2]) or 0) <= now then failures = 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local in_flight = redis.call('ZCARD', KEYS[2])
local due = ARGV[6] == '1' and ((tonumber(r[4]) or 0) > now or in_flight > 0)
if due and ARGV[3] == 'none' then return {'captcha_required', ''} end
if due and ARGV[3] == 'wrong' then return {'captcha_invalid', ''} end
if failures + in_flight >= tonumber(ARGV[4]) then return {'busy', ''} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
if due then return {'admitted', '', 1} end
return {'admitted', ''}
"""

# KEYS: as ADMIT_LUA. ARGV: now, attempt id, outcome, max failures, when a new count lapses, when a lock
# would end, when the captcha rule would end ('' for none), the record's TTL (ms).
# Returns {verdict, failures, locked_until}.
SETTLE_LUA = """
redis.call('ZREM', KEYS[2], ARGV[2])
if ARGV[3] == 'abandoned' then return {'released', '0', ''} end
if ARGV[3] == 'succeeded' then
  redis.call('HDEL', KEYS[1], 'failures', 'failures_until', 'captcha_until')
  return {'succeeded', '0', ''}
end
local now = tonumber(ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'failures', 'failures_until', 'locked_until')
if (tonumber(r[3]) or 0) > now then return {'locked', '0', r[3]} end
local failures = tonumber(r[1]) or 0
if (tonumber(r[2]) or 0) <= now then
  failures = 0
  redis.call('HSET', KEYS[1], 'failures_until', ARGV[5])
end
failures = failures + 1
redis.call('HSET', KEYS[1], 'failures', failures)
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'captcha_until', ARGV[7]) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[8]) then redis.call('PEXPIRE', KEYS[1], ARGV[8]) end
if failures >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'locked_until', ARGV[6])
  redis.call('HDEL', KEYS[1], 'failures', 'failures_until')
  return {'locked', tostring(failures), ARGV[6]}
end
return {'failed', tostring(failures), ''}
"""

# KEYS: as ADMIT_LUA. Returns the lock's end ('' when there was none).
CLEAR_ATTEMPTS_LUA = """
local locked = redis.call('HGET', KEYS[1], 'locked_until')
redis.call('DEL', KEYS[1], KEYS[2])
return locked or ''
"""


PUT = Script(PUT_LUA)
TRANSITION = Script(TRANSITION_LUA)
HIT = Script(HIT_LUA)
ROTATE = Script(ROTATE_LUA)
END_SESSION = Script(END_SESSION_LUA)
ADD_MEMBER = Script(ADD_MEMBER_LUA)
TAKE = Script(TAKE_LUA)
RESERVE_LIVE = Script(RESERVE_LIVE_LUA)
RELEASE_LIVE = Script(RELEASE_LIVE_LUA)
FEED_APPEND = Script(FEED_APPEND_LUA)
ADMIT = Script(ADMIT_LUA)
SETTLE = Script(SETTLE_LUA)
CLEAR_ATTEMPTS = Script(CLEAR_ATTEMPTS_LUA)
ENQUEUE = Script(ENQUEUE_LUA)
CLAIM = Script(CLAIM_LUA)
RESCHEDULE = Script(RESCHEDULE_LUA)
FINISH = Script(FINISH_LUA)

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
    """`StateStore` on Redis. `connect` is a Redis URL (see `redis_clients`) or its parsed target.
    `backoff` paces the fan-out's reconnects; `opener` makes the connections' transports (tests pass
    a fake one, see `connections.Opener`)."""

    def __init__(
        self,
        connect: RedisTarget | str,
        *,
        prefix: str = DEFAULT_PREFIX,
        health_interval: float = HEALTH_INTERVAL,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        backoff: Backoff | None = None,
        socket_timeout: float = SOCKET_TIMEOUT,
        socket_connect_timeout: float = CONNECT_TIMEOUT,
        retries: int = RETRIES,
        opener: Opener = open_socket,
    ) -> None:
        self.target = parse_redis_url(connect) if isinstance(connect, str) else connect
        self.prefix = prefix
        # Commands and pub/sub go through the auto-pipelined wire, which connects by itself.
        self.wire = Wire(
            self.target,
            socket_timeout=socket_timeout,
            connect_timeout=socket_connect_timeout,
            retries=retries,
            opener=opener,
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
        backoff: Backoff | None = None,
    ) -> RedisStore:
        return cls(
            parse_redis_url(url),
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

    def attempt_keys(self, key: str) -> list[str]:
        """A subject's attempt record and its attempts in flight (one slot)."""
        record = self.data_key(keys.key(keys.Space.ATTEMPTS, key))
        return [record, record + ":in-flight"]

    def queue_keys(self, queue: str) -> list[str]:
        """A queue's due times and payloads (one slot)."""
        base = self.data_key(queue)
        return [base + ":due", base + ":items"]

    def live_keys(self, group: str) -> list[str]:
        """The set of all live entries and the group's, in one slot (the hash tag of the key space)."""
        base = self.data_key(keys.Space.QR_LIVE.value)
        return [base + ":all", f"{base}:group:{group}"]

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

    async def reserve_live(
        self, group: str, member: str, expires_at: float, now: float, *, group_max: int, total_max: int
    ) -> LiveOutcome:
        ttl_ms = max(1, _ms(expires_at - now))
        args: list[Arg] = [repr(float(now)), repr(float(expires_at)), member, group_max, total_max, ttl_ms]
        with _Guard("reserve_live"):
            # Safe to repeat: a member already live answers "reserved" again.
            outcome = text_of(await self.wire.script(RESERVE_LIVE, self.live_keys(group), args, idempotent=True))
        if outcome == "group_full":
            return "group_full"
        if outcome == "store_full":
            return "store_full"
        return "reserved"

    async def release_live(self, group: str, member: str) -> None:
        with _Guard("release_live"):
            await self.wire.script(RELEASE_LIVE, self.live_keys(group), [member], idempotent=True)

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

    # Feeds: a stream `qrgate:{feed:<name>}` and its wake-up channel `qrgate:{feed:<name>}:wake` (one slot) ------
    def feed_keys(self, feed: str) -> list[str]:
        stream = f"{self.prefix}:{{feed:{feed}}}"
        return [stream, stream + ":wake"]

    async def feed_append(self, feed: str, entry: str, retention: int) -> str:
        with _Guard("feed_append"):
            # Sent again after a lost reply: the entry may then be there twice, which readers allow.
            reply = await self.wire.script(FEED_APPEND, self.feed_keys(feed), [entry, _ms(retention)], idempotent=True)
        return text_of(reply)

    async def feed_read(self, feed: str, after: str, limit: int) -> tuple[list[tuple[str, str]], str]:
        stream = self.feed_keys(feed)[0]
        start = f"({after}" if after else "-"
        with _Guard("feed_read"):
            flat = await self.wire.call(stream, "XRANGE", stream, start, "+", "COUNT", limit, idempotent=True)
        found = [(text_of(item[0]), text_of(item[1][1])) for item in flat]
        return found, found[-1][0] if found else (after or "0-0")

    def feed_subscribe(self, feed: str) -> AbstractAsyncContextManager[Waiter]:
        return self._waiting(self.feed_keys(feed)[1])

    # Generic expiring data ---------------------------------------------------------------------
    async def hit(self, key: str, ttl: int, *, approximate: bool = False) -> int:
        with _Guard("hit"):
            return int(await self.wire.script(HIT, [self.counter_key(key)], [_ms(ttl)], idempotent=approximate))

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

    # Delayed work ----------------------------------------------------------------------------------
    async def enqueue(self, queue: str, item_id: str, payload: str, due: float, *, limit: int, ttl: int) -> bool:
        with _Guard("enqueue"):
            args: list[Arg] = [item_id, payload, repr(float(due)), limit, _ms(ttl)]
            return int(await self.wire.script(ENQUEUE, self.queue_keys(queue), args, idempotent=True)) == 1

    async def claim_due(self, queue: str, now: float, lease: float, count: int) -> list[tuple[str, str]]:
        with _Guard("claim_due"):
            args: list[Arg] = [repr(float(now)), repr(float(now + lease)), count]
            flat = await self.wire.script(CLAIM, self.queue_keys(queue), args, idempotent=False)
        return [(text_of(item_id), text_of(payload)) for item_id, payload in zip(flat[::2], flat[1::2], strict=True)]

    async def reschedule(self, queue: str, item_id: str, payload: str, due: float) -> None:
        with _Guard("reschedule"):
            args: list[Arg] = [item_id, payload, repr(float(due))]
            await self.wire.script(RESCHEDULE, self.queue_keys(queue), args, idempotent=True)

    async def finish(self, queue: str, item_id: str) -> None:
        with _Guard("finish"):
            await self.wire.script(FINISH, self.queue_keys(queue), [item_id], idempotent=True)

    async def queued(self, queue: str) -> int:
        key = self.queue_keys(queue)[1]
        with _Guard("queued"):
            return int(await self.wire.call(key, "HLEN", key, idempotent=True))

    # Guarded attempts ------------------------------------------------------------------------------
    async def admit_attempt(
        self, key: str, attempt: str, captcha: attempts.CaptchaCheck, limits: attempts.AttemptLimits, now: float
    ) -> attempts.Admitted:
        args: list[Arg] = [
            repr(now),
            attempt,
            captcha.value,
            limits.max_failures,
            repr(limits.reservation_seconds),
            "1" if limits.captcha_seconds else "0",
            limits.reservation_ms,
        ]
        keys = self.attempt_keys(key)
        with _Guard("admit_attempt"):
            reply = await self.wire.script(ADMIT, keys, args, idempotent=False)
        until = float(text_of(reply[1]) or 0)
        return attempts.Admitted(attempts.Admission(text_of(reply[0])), until, captcha_due=len(reply) > 2)

    async def settle_attempt(
        self, key: str, attempt: str, outcome: attempts.Outcome, limits: attempts.AttemptLimits, now: float
    ) -> attempts.Settled:
        captcha_until = repr(now + limits.captcha_seconds) if limits.captcha_seconds else ""
        args: list[Arg] = [
            repr(now),
            attempt,
            outcome.value,
            limits.max_failures,
            repr(now + limits.lock_seconds),
            repr(now + limits.lock_seconds),
            captcha_until,
            _ms(max(limits.lock_seconds, limits.captcha_seconds)),
        ]
        with _Guard("settle_attempt"):
            verdict, failures, until = await self.wire.script(SETTLE, self.attempt_keys(key), args, idempotent=False)
        return attempts.Settled(attempts.Verdict(text_of(verdict)), int(failures), float(text_of(until) or 0))

    async def attempt_status(self, key: str, now: float) -> attempts.AttemptStatus:
        record_key = self.attempt_keys(key)[0]
        with _Guard("attempt_status"):
            locked, captcha = await self.wire.call(
                record_key, "HMGET", record_key, "locked_until", "captcha_until", idempotent=True
            )
        locked_until = float(text_of(locked)) if locked else 0.0
        captcha_until = float(text_of(captcha)) if captcha else 0.0
        return attempts.AttemptStatus(locked_until if locked_until > now else None, captcha_until > now)

    async def clear_attempts(self, key: str, now: float) -> bool:
        with _Guard("clear_attempts"):
            # Not repeated after a lost reply: the second run would answer "was not locked".
            locked = await self.wire.script(CLEAR_ATTEMPTS, self.attempt_keys(key), [], idempotent=False)
        return bool(locked) and float(text_of(locked)) > now

    async def _hgetall(self, key: str, operation: str) -> dict[str, str] | None:
        with _Guard(operation):
            flat = await self.wire.call(key, "HGETALL", key, idempotent=True)
        return _record(flat)
