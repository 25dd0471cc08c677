"""The embedded store: one process, plain dicts, atomic because the event loop runs one task at a time.

No method awaits between reading and writing a key, so each operation is as atomic as a Lua script.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

from gateway.state import attempts
from gateway.state.base import LiveOutcome, LocalWaiters, RotateOutcome, Waiter, cursor_order, waiting
from gateway.state.updates import ConditionalUpdate

SWEEP_INTERVAL = 30.0


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[str, tuple[float, dict[str, str]]] = {}
        self._counters: dict[str, tuple[float, int]] = {}
        self._sets: dict[str, tuple[float, set[str]]] = {}
        self._attempts: dict[str, attempts.AttemptRecord] = {}
        self._queues: dict[str, dict[str, tuple[float, str]]] = {}  # queue -> item id -> (due, payload)
        # Live entries (reserve_live): member -> (group, expires_at), and group -> its members.
        self._live: dict[str, tuple[str, float]] = {}
        self._live_groups: dict[str, set[str]] = {}
        self._feeds: dict[str, deque[tuple[tuple[int, int], str]]] = {}
        self._feed_last: tuple[int, int] = (0, 0)
        self.waiters = LocalWaiters()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="memory-store-sweeper")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def ping(self) -> None:
        return None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()

    def sweep(self) -> None:
        now = time.monotonic()
        for table in (self._data, self._counters, self._sets):
            for key in [k for k, (deadline, _) in table.items() if deadline <= now]:
                del table[key]
        wall = time.time()
        for key in [k for k, record in self._attempts.items() if record.live_until() <= wall]:
            del self._attempts[key]

    def _read(self, key: str) -> dict[str, str] | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            del self._data[key]
            return None
        return item[1]

    # QR sessions -----------------------------------------------------------------------------
    async def create_qr(self, qr_id: str, record: Mapping[str, str], ttl: int) -> None:
        self._data["qr:" + qr_id] = (time.monotonic() + ttl, dict(record))

    async def get_qr(self, qr_id: str) -> dict[str, str] | None:
        record = self._read("qr:" + qr_id)
        return dict(record) if record is not None else None

    async def transition_qr(
        self, qr_id: str, update: ConditionalUpdate, now: float
    ) -> tuple[bool, dict[str, str] | None]:
        key = "qr:" + qr_id
        record = self._read(key)
        if record is None:
            return False, None
        if not update.applies_to(record, now):
            return False, dict(record)
        changed = update.apply(record)
        self._data[key] = (self._data[key][0], changed)
        self.waiters.wake(qr_id)
        return True, dict(changed)

    def subscribe(self, qr_id: str) -> AbstractAsyncContextManager[Waiter]:
        return waiting(self.waiters, qr_id)

    async def reserve_live(
        self, group: str, member: str, expires_at: float, now: float, *, group_max: int, total_max: int
    ) -> LiveOutcome:
        if member in self._live:
            return "reserved"
        self._forget_lapsed_live(now)
        if len(self._live) >= total_max:
            return "store_full"
        members = self._live_groups.setdefault(group, set())
        if len(members) >= group_max:
            return "group_full"
        members.add(member)
        self._live[member] = (group, expires_at)
        return "reserved"

    def _forget_lapsed_live(self, now: float) -> None:
        # Entries are added in order of expiry (one TTL for all), so the lapsed ones come first.
        while self._live:
            member, (group, expires_at) = next(iter(self._live.items()))
            if expires_at > now:
                return
            self._drop_live(member, group)

    def _drop_live(self, member: str, group: str) -> None:
        del self._live[member]
        members = self._live_groups.get(group)
        if members is not None:
            members.discard(member)
            if not members:
                del self._live_groups[group]

    async def release_live(self, group: str, member: str) -> None:
        entry = self._live.get(member)
        if entry is not None and entry[0] == group:
            self._drop_live(member, group)

    # Refresh sessions ------------------------------------------------------------------------------
    async def create_session(self, sid: str, session: Mapping[str, str], ttl: int) -> None:
        self._data["session:" + sid] = (time.monotonic() + ttl, dict(session))
        self._sets.pop("session-spent:" + sid, None)

    async def get_session(self, sid: str) -> dict[str, str] | None:
        return await self.get("session:" + sid)

    async def rotate_refresh(
        self, sid: str, presented_hash: str, new_hash: str, now: float, ttl: int
    ) -> tuple[RotateOutcome, dict[str, str] | None]:
        session = self._read("session:" + sid)
        if session is None:
            return "unknown", None
        spent_key = "session-spent:" + sid
        if session.get("refresh_hash") == presented_hash:
            session.update(refresh_hash=new_hash, last_used=repr(now))
            deadline = time.monotonic() + ttl
            self._data["session:" + sid] = (deadline, session)
            _, spent = self._sets.get(spent_key, (0.0, set()))
            spent.add(presented_hash)
            self._sets[spent_key] = (deadline, spent)
            return "rotated", dict(session)
        if presented_hash in self._read_set(spent_key):
            del self._data["session:" + sid]
            self._sets.pop(spent_key, None)
            return "reused", None
        return "unknown", None

    async def end_session(self, sid: str) -> bool:
        existed = self._read("session:" + sid) is not None
        self._data.pop("session:" + sid, None)
        self._sets.pop("session-spent:" + sid, None)
        return existed

    def _read_set(self, key: str) -> set[str]:
        item = self._sets.get(key)
        if item is None or item[0] <= time.monotonic():
            self._sets.pop(key, None)
            return set()
        return item[1]

    async def add_member(self, key: str, member: str, ttl: int) -> None:
        deadline, current = self._sets.get(key, (0.0, set()))
        if deadline <= time.monotonic():
            current = set()
        current.add(member)
        self._sets[key] = (max(deadline, time.monotonic() + ttl), current)

    async def members(self, key: str) -> set[str]:
        return set(self._read_set(key))

    async def remove_member(self, key: str, member: str) -> None:
        self._read_set(key).discard(member)

    # Feeds ------------------------------------------------------------------------------------------
    async def feed_append(self, feed: str, entry: str, retention: int) -> str:
        now_ms = int(time.time() * 1000)
        last = self._feed_last
        cursor = (now_ms, 0) if now_ms > last[0] else (last[0], last[1] + 1)
        self._feed_last = cursor
        log = self._feeds.setdefault(feed, deque())
        log.append((cursor, entry))
        oldest = now_ms - retention * 1000
        while log and log[0][0][0] < oldest:
            log.popleft()
        self.waiters.wake("feed:" + feed)
        return f"{cursor[0]}-{cursor[1]}"

    async def feed_read(self, feed: str, after: str, limit: int) -> tuple[list[tuple[str, str]], str]:
        start = cursor_order(after) if after else (-1, -1)
        found = [(f"{c[0]}-{c[1]}", entry) for c, entry in self._feeds.get(feed, ()) if c > start][:limit]
        return found, found[-1][0] if found else (after or "0-0")

    def feed_subscribe(self, feed: str) -> AbstractAsyncContextManager[Waiter]:
        return waiting(self.waiters, "feed:" + feed)

    # Generic expiring data ---------------------------------------------------------------------
    async def hit(self, key: str, ttl: int, *, approximate: bool = False) -> int:
        now = time.monotonic()
        deadline, count = self._counters.get(key, (0.0, 0))
        if deadline <= now:
            deadline, count = now + ttl, 0
        self._counters[key] = (deadline, count + 1)
        return count + 1

    async def put(self, key: str, value: Mapping[str, str], ttl: int) -> None:
        self._data[key] = (time.monotonic() + ttl, dict(value))

    async def get(self, key: str) -> dict[str, str] | None:
        record = self._read(key)
        return dict(record) if record is not None else None

    async def take(self, key: str) -> dict[str, str] | None:
        record = self._read(key)
        if record is not None:
            del self._data[key]
        return record

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)
        self._counters.pop(key, None)

    # Delayed work ----------------------------------------------------------------------------------
    async def enqueue(self, queue: str, item_id: str, payload: str, due: float, *, limit: int, ttl: int) -> bool:
        items = self._queues.setdefault(queue, {})  # in memory, a queue lives as long as the process
        if item_id in items:
            return True
        if len(items) >= limit:
            return False
        items[item_id] = (due, payload)
        return True

    async def claim_due(self, queue: str, now: float, lease: float, count: int) -> list[tuple[str, str]]:
        items = self._queues.get(queue, {})
        due = sorted((when, item_id) for item_id, (when, _) in items.items() if when <= now)[:count]
        claimed = []
        for _, item_id in due:
            payload = items[item_id][1]
            items[item_id] = (now + lease, payload)
            claimed.append((item_id, payload))
        return claimed

    async def reschedule(self, queue: str, item_id: str, payload: str, due: float) -> None:
        items = self._queues.get(queue, {})
        if item_id in items:
            items[item_id] = (due, payload)

    async def finish(self, queue: str, item_id: str) -> None:
        self._queues.get(queue, {}).pop(item_id, None)

    async def queued(self, queue: str) -> int:
        return len(self._queues.get(queue, {}))

    # Guarded attempts (gateway/state/attempts.py decides; no await in between makes it atomic) ---
    async def admit_attempt(
        self, key: str, attempt: str, captcha: attempts.CaptchaCheck, limits: attempts.AttemptLimits, now: float
    ) -> attempts.Admitted:
        record = self._attempts.setdefault(key, attempts.AttemptRecord())
        return attempts.admit(record, attempt, captcha, limits, now)

    async def settle_attempt(
        self, key: str, attempt: str, outcome: attempts.Outcome, limits: attempts.AttemptLimits, now: float
    ) -> attempts.Settled:
        record = self._attempts.setdefault(key, attempts.AttemptRecord())
        return attempts.settle(record, attempt, outcome, limits, now)

    async def attempt_status(self, key: str, now: float) -> attempts.AttemptStatus:
        return attempts.status(self._attempts.get(key), now)

    async def clear_attempts(self, key: str, now: float) -> bool:
        record = self._attempts.pop(key, None)
        return record is not None and record.locked_until > now
