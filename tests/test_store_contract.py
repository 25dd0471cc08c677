"""One contract for every state store: the memory store, Redis standalone, Redis Cluster, and (for a
round trip) Redis behind Sentinel. Redis-only at the end: outages become StoreUnavailable, and service
(waiters included) resumes by itself when Redis is back.

Tests are plain functions running one `asyncio.run` each; every store is closed inside it.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from gateway.qr import machine
from gateway.qr.machine import TABLE, QrEvent, QrState
from gateway.state.base import StateStore, StoreUnavailable, cursor_order
from gateway.state.memory import MemoryStore
from gateway.state.redis import RedisStore
from gateway.state.redis_clients import parse_redis_url, reconnect_backoff
from tests.support.redis_procs import RedisClusterGroup, RedisSentinelGroup, RedisServer, command, sync_client

T = TypeVar("T")
SCANNER = "person-1"
# Quick reconnects keep the outage tests short.
FAST: dict[str, Any] = {"backoff": reconnect_backoff(0.02, 0.5)}


def run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(body())


@dataclass
class Backend:
    """Makes stores that share one backend (like gateway processes sharing one Redis)."""

    kind: str
    url: str = ""
    server: RedisServer | None = None
    prefix: str = ""

    @property
    def shared(self) -> bool:
        """Whether two stores see the same data (and wake each other's waiters)."""
        return self.kind != "memory"

    def new_store(self) -> StateStore:
        if self.kind == "memory":
            return MemoryStore()
        return RedisStore.from_url(self.url, prefix=self.prefix, **FAST)

    @asynccontextmanager
    async def store(self) -> AsyncIterator[StateStore]:
        store = self.new_store()
        await store.start()
        try:
            yield store
        finally:
            await store.close()


def _backend(kind: str, request: pytest.FixtureRequest) -> Backend:
    prefix = "t" + uuid.uuid4().hex[:10]  # the Cluster is shared by the session: keep tests apart
    if kind == "memory":
        return Backend("memory")
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return Backend("redis", server.url, server, prefix)
    cluster: RedisClusterGroup = request.getfixturevalue("redis_cluster")
    return Backend("cluster", cluster.url, None, prefix)


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return _backend(request.param, request)


@pytest.fixture(params=["redis", "cluster"])
def redis_backend(request: pytest.FixtureRequest) -> Backend:
    return _backend(request.param, request)


_ids = itertools.count()


def new_id() -> str:
    return f"qr{next(_ids)}-{uuid.uuid4().hex[:12]}"


def qr_record(state: QrState = QrState.PENDING, *, lifetime: float = 60.0, **extra: str) -> dict[str, str]:
    record = {
        "state": state.value,
        "expires_at": repr(time.time() + lifetime),
        "client_id": "withholding-desktop",
        "device_name": "前台电脑 𠮷",
        "scanner_sub": "",
        **extra,
    }
    if state not in (QrState.PENDING,):
        record["scanner_sub"] = SCANNER
    return record


# QR sessions ----------------------------------------------------------------------------------


def test_create_and_get_qr(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as store:
            qr_id = new_id()
            record = qr_record(note="", emoji="😀")
            assert await store.get_qr(qr_id) is None
            await store.create_qr(qr_id, record, 30)
            assert await store.get_qr(qr_id) == record
            replaced = qr_record(QrState.SCANNED)
            await store.create_qr(qr_id, replaced, 30)
            assert await store.get_qr(qr_id) == replaced
            assert await store.get_qr(new_id()) is None

    run(body)


@pytest.mark.slow  # waits out TTLs of 1 and 2 s
def test_keys_expire(backend: Backend) -> None:
    """QR records and data expire after their TTL; a counter's TTL runs from its first hit."""

    async def body() -> None:
        async with backend.store() as store:
            qr_id, key, counter, sid, short_set, long_set = (new_id() for _ in range(6))
            await store.create_qr(qr_id, qr_record(), 1)
            await store.put(key, {"a": "1"}, 1)
            await store.create_session(sid, {"refresh_hash": "h0"}, 1)
            await store.add_member(short_set, "a", 1)
            await store.add_member(long_set, "a", 30)
            await store.add_member(long_set, "b", 1)  # never shortens the TTL
            assert await store.hit(counter, 2) == 1
            await asyncio.sleep(0.6)
            assert await store.hit(counter, 2) == 2  # does not extend the TTL
            assert await store.get_qr(qr_id) is not None
            await asyncio.sleep(0.6)
            assert await store.get_qr(qr_id) is None
            assert await store.get(key) is None
            assert await store.take(key) is None
            assert await store.get_session(sid) is None
            assert await store.rotate_refresh(sid, "h0", "h1", time.time(), 30) == ("unknown", None)
            assert await store.members(short_set) == set()
            assert await store.members(long_set) == {"a", "b"}
            assert await store.hit(counter, 2) == 3
            await asyncio.sleep(0.95)
            assert await store.hit(counter, 2) == 1  # 2.15 s after the first hit: a new window

    run(body)


@pytest.mark.parametrize("event", list(QrEvent))
def test_transition_applies(backend: Backend, event: QrEvent) -> None:
    from_states, to_state, _, _ = TABLE[event]

    async def body() -> None:
        async with backend.store() as store:
            for state in sorted(from_states):
                qr_id = new_id()
                record = qr_record(state)
                await store.create_qr(qr_id, record, 30)
                updates = {"scanner_name": "张*"} if event is QrEvent.SCAN else {"at": "1"}
                transition = machine.plan(event, actor=SCANNER, updates=updates)
                ok, after = await store.transition_qr(qr_id, transition, time.time())
                assert ok, (event, state)
                assert after == transition.apply(record)
                assert after is not None
                assert after["state"] == to_state.value
                assert await store.get_qr(qr_id) == after

    run(body)


@pytest.mark.parametrize("event", list(QrEvent))
def test_transition_refused(backend: Backend, event: QrEvent) -> None:
    from_states, _, before_expiry, only_scanner = TABLE[event]

    async def body() -> None:
        async with backend.store() as store:
            transition = machine.plan(event, actor=SCANNER, updates={"x": "y"})
            # absent
            assert await store.transition_qr(new_id(), transition, time.time()) == (False, None)
            # wrong state
            for state in sorted(set(QrState) - from_states):
                qr_id = new_id()
                record = qr_record(state)
                await store.create_qr(qr_id, record, 30)
                assert await store.transition_qr(qr_id, transition, time.time()) == (False, record)
                assert await store.get_qr(qr_id) == record
            # after expiry (judged by the `now` argument)
            for state in sorted(from_states):
                qr_id = new_id()
                record = qr_record(state, lifetime=10)
                await store.create_qr(qr_id, record, 30)
                later = float(record["expires_at"])
                ok, seen = await store.transition_qr(qr_id, transition, later)
                if before_expiry:
                    assert (ok, seen) == (False, record)
                    ok, _ = await store.transition_qr(qr_id, transition, later - 0.001)
                assert ok  # just before expiry, or a step that is allowed after it (deliver)
            # someone other than the scanner
            if only_scanner:
                for state in sorted(from_states):
                    qr_id = new_id()
                    record = qr_record(state)
                    await store.create_qr(qr_id, record, 30)
                    other = machine.plan(event, actor="person-2")
                    assert await store.transition_qr(qr_id, other, time.time()) == (False, record)
                    assert await store.get_qr(qr_id) == record

    run(body)


def test_concurrent_scans_exactly_one_wins(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as first, backend.store() as second:
            other = second if backend.shared else first
            for _ in range(5):
                qr_id = new_id()
                await first.create_qr(qr_id, qr_record(), 30)
                results = await asyncio.gather(
                    first.transition_qr(qr_id, machine.plan(QrEvent.SCAN, updates={"scanner_sub": "a"}), time.time()),
                    other.transition_qr(qr_id, machine.plan(QrEvent.SCAN, updates={"scanner_sub": "b"}), time.time()),
                )
                assert sorted(ok for ok, _ in results) == [False, True]
                winner = next(after for ok, after in results if ok)
                assert await first.get_qr(qr_id) == winner

    run(body)


def test_fifty_concurrent_confirms_exactly_one_wins(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as first, backend.store() as second:
            stores = [first, second] if backend.shared else [first]
            qr_id = new_id()
            await first.create_qr(qr_id, qr_record(QrState.SCANNED), 30)
            confirm = machine.plan(QrEvent.CONFIRM, actor=SCANNER)
            results = await asyncio.gather(
                *(stores[i % len(stores)].transition_qr(qr_id, confirm, time.time()) for i in range(50))
            )
            assert sum(ok for ok, _ in results) == 1
            deliveries = await asyncio.gather(
                *(
                    stores[i % len(stores)].transition_qr(qr_id, machine.plan(QrEvent.DELIVER), time.time())
                    for i in range(10)
                )
            )
            assert sum(ok for ok, _ in deliveries) == 1

    run(body)


# Wake-ups ---------------------------------------------------------------------------------------


def test_waiter_woken_by_a_transition_elsewhere(backend: Backend) -> None:
    """A waiter is woken by a transition made through another store instance (another process),
    and only by a transition that applied, on its own QR."""

    async def body() -> None:
        async with backend.store() as listener, backend.store() as actor:
            actor = actor if backend.shared else listener
            qr_id, unrelated = new_id(), new_id()
            await actor.create_qr(qr_id, qr_record(), 30)
            await actor.create_qr(unrelated, qr_record(), 30)
            async with listener.subscribe(qr_id) as waiter, listener.subscribe(qr_id) as second_waiter:
                assert (await listener.get_qr(qr_id) or {})["state"] == "pending"
                assert not await waiter.wait(0.05)
                ok, _ = await actor.transition_qr(unrelated, machine.plan(QrEvent.SCAN), time.time())
                assert ok
                refused = machine.plan(QrEvent.CONFIRM, actor=SCANNER)  # pending: refused
                assert await actor.transition_qr(qr_id, refused, time.time()) == (False, await actor.get_qr(qr_id))
                assert not await waiter.wait(0.3)
                ok, _ = await actor.transition_qr(
                    qr_id, machine.plan(QrEvent.SCAN, updates={"scanner_sub": SCANNER}), time.time()
                )
                assert ok
                assert await waiter.wait(5)
                assert await second_waiter.wait(5)
                assert (await listener.get_qr(qr_id) or {})["state"] == "scanned"
            # after leaving, a new waiter on the same QR still works (resubscribes cleanly)
            async with listener.subscribe(qr_id) as waiter:
                ok, _ = await actor.transition_qr(qr_id, machine.plan(QrEvent.CONFIRM, actor=SCANNER), time.time())
                assert ok
                assert await waiter.wait(5)

    run(body)


def test_many_waiters_many_qrs(backend: Backend) -> None:
    """Twenty QRs (spread over the Cluster's shards), two waiters each, subscribing concurrently."""

    async def body() -> None:
        async with backend.store() as listener, backend.store() as actor:
            actor = actor if backend.shared else listener
            ids = [new_id() for _ in range(20)]
            for qr_id in ids:
                await actor.create_qr(qr_id, qr_record(), 30)

            async def wait_for_scan(qr_id: str) -> bool:
                async with listener.subscribe(qr_id) as waiter:
                    ready.release()
                    return await waiter.wait(5)

            ready = asyncio.Semaphore(0)
            tasks = [asyncio.create_task(wait_for_scan(qr_id)) for qr_id in ids for _ in range(2)]
            for _ in tasks:
                await ready.acquire()
            for qr_id in ids:
                assert (await actor.transition_qr(qr_id, machine.plan(QrEvent.SCAN), time.time()))[0]
            assert all(await asyncio.gather(*tasks))

    run(body)


# Generic data -----------------------------------------------------------------------------------


def test_hit_counts_exactly(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as first, backend.store() as second:
            stores = [first, second] if backend.shared else [first]
            key = new_id()
            counts = await asyncio.gather(*(stores[i % len(stores)].hit(key, 30) for i in range(50)))
            assert sorted(counts) == list(range(1, 51))
            assert await first.hit(key, 30) == 51

    run(body)


def test_take_has_a_single_winner(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as first, backend.store() as second:
            stores = [first, second] if backend.shared else [first]
            for _ in range(3):
                key = new_id()
                await first.put(key, {"answer": "42", "name": "𠮷"}, 30)
                taken = await asyncio.gather(*(stores[i % len(stores)].take(key) for i in range(20)))
                assert [value for value in taken if value is not None] == [{"answer": "42", "name": "𠮷"}]
                assert await first.get(key) is None

    run(body)


def test_a_queue_of_delayed_work(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as store:
            queue, now = new_id(), time.time()
            assert await store.enqueue(queue, "a", "payload a", now - 1, limit=3, ttl=60)
            assert await store.enqueue(queue, "b", "payload b 𠮷", now + 100, limit=3, ttl=60)
            assert await store.enqueue(queue, "a", "ignored", now, limit=3, ttl=60)  # queued already
            assert await store.enqueue(queue, "c", "payload c", now - 2, limit=3, ttl=60)
            assert not await store.enqueue(queue, "d", "payload d", now, limit=3, ttl=60)  # full
            assert await store.queued(queue) == 3
            assert await store.claim_due(queue, now, 30, 1) == [("c", "payload c")]  # the earliest first
            assert await store.claim_due(queue, now, 30, 10) == [("a", "payload a")]  # c is leased
            assert sorted(await store.claim_due(queue, now + 31, 30, 10)) == [("a", "payload a"), ("c", "payload c")]
            await store.reschedule(queue, "a", "payload a, tried once", now + 200)
            await store.finish(queue, "c")
            await store.reschedule(queue, "c", "finished: not queued again", now)
            assert await store.claim_due(queue, now + 101, 30, 10) == [("b", "payload b 𠮷")]
            await store.finish(queue, "b")
            assert await store.claim_due(queue, now + 201, 30, 10) == [("a", "payload a, tried once")]
            await store.finish(queue, "a")
            await store.finish(queue, "b")
            await store.finish(queue, "b")
            assert await store.queued(queue) == 0

    run(body)


def test_queued_work_is_claimed_once_by_competing_processes(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as first, backend.store() as second:
            stores = [first, second] if backend.shared else [first]
            queue, now = new_id(), time.time()
            for index in range(20):
                assert await first.enqueue(queue, f"item-{index}", str(index), now, limit=100, ttl=60)
            claims = await asyncio.gather(*(stores[i % len(stores)].claim_due(queue, now, 30, 3) for i in range(10)))
            claimed = [item_id for batch in claims for item_id, _ in batch]
            assert sorted(claimed) == sorted(f"item-{index}" for index in range(20))

    run(body)


def test_put_get_delete(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as store:
            key = new_id()
            assert await store.get(key) is None
            await store.put(key, {"a": "1", "b": "2"}, 30)
            assert await store.get(key) == {"a": "1", "b": "2"}
            await store.put(key, {"c": "3"}, 30)  # replaces the whole value
            assert await store.get(key) == {"c": "3"}
            await store.put(key, {}, 30)
            assert await store.get(key) == {}
            assert await store.take(key) == {}
            assert await store.get(key) is None
            # counters and values do not collide; delete removes both
            await store.put(key, {"v": "1"}, 30)
            assert await store.hit(key, 30) == 1
            assert await store.get(key) == {"v": "1"}
            await store.delete(key)
            assert await store.get(key) is None
            assert await store.hit(key, 30) == 1
            await store.delete(new_id())  # deleting nothing is fine

    run(body)


# Refresh sessions and sets ----------------------------------------------------------------------


def test_refresh_rotation_and_reuse(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as store:
            sid = new_id()
            session = {"sub": "p1", "client_id": "web", "refresh_hash": "h0", "name": "𠮷"}
            assert await store.get_session(sid) is None
            assert await store.rotate_refresh(sid, "h0", "h1", 1.5, 30) == ("unknown", None)
            await store.create_session(sid, session, 30)
            assert await store.get_session(sid) == session
            now = time.time()
            outcome, after = await store.rotate_refresh(sid, "h0", "h1", now, 30)
            assert outcome == "rotated"
            assert after == {**session, "refresh_hash": "h1", "last_used": repr(now)}
            assert await store.get_session(sid) == after
            assert await store.rotate_refresh(sid, "nope", "h9", now, 30) == ("unknown", None)
            assert await store.get_session(sid) == after  # unchanged
            outcome, after = await store.rotate_refresh(sid, "h1", "h2", now, 30)
            assert outcome == "rotated"
            # a spent hash presented again: theft, the whole session goes
            assert await store.rotate_refresh(sid, "h0", "h3", now, 30) == ("reused", None)
            assert await store.get_session(sid) is None
            assert await store.rotate_refresh(sid, "h2", "h3", now, 30) == ("unknown", None)
            # a new session under the same id starts with no spent hashes
            await store.create_session(sid, session, 30)
            assert await store.rotate_refresh(sid, "h1", "h4", now, 30) == ("unknown", None)
            assert await store.end_session(sid) is True
            assert await store.end_session(sid) is False
            assert await store.get_session(sid) is None

    run(body)


def test_concurrent_rotations_exactly_one_wins(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as first, backend.store() as second:
            stores = [first, second] if backend.shared else [first]
            sid = new_id()
            await first.create_session(sid, {"refresh_hash": "h0"}, 30)
            results = await asyncio.gather(
                *(stores[i % len(stores)].rotate_refresh(sid, "h0", f"n{i}", 2.0, 30) for i in range(20))
            )
            outcomes = sorted(outcome for outcome, _ in results)
            # one rotates; the next presents a spent hash, which revokes the session; then it is gone
            assert outcomes == ["reused", "rotated"] + ["unknown"] * 18
            assert await first.get_session(sid) is None

    run(body)


def test_expiring_sets(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as store:
            key = new_id()
            assert await store.members(key) == set()
            await store.add_member(key, "s1", 30)
            await store.add_member(key, "s2", 30)
            await store.add_member(key, "s1", 30)
            assert await store.members(key) == {"s1", "s2"}
            await store.remove_member(key, "s1")
            await store.remove_member(key, "absent")
            assert await store.members(key) == {"s2"}
            await store.remove_member(key, "s2")
            assert await store.members(key) == set()
            # sets, values and counters under one name do not collide
            await store.add_member(key, "m", 30)
            await store.put(key, {"v": "1"}, 30)
            assert await store.hit(key, 30) == 1
            assert await store.members(key) == {"m"}
            assert await store.get(key) == {"v": "1"}

    run(body)


# Sentinel ---------------------------------------------------------------------------------------


def test_feeds_append_read_by_cursor_and_wake_every_process(backend: Backend) -> None:
    """The session-end feed's store primitives: cursors increase, reads start after a cursor, a page
    is limited, and an append through another store instance (process) wakes this one's waiters."""

    async def body() -> None:
        async with backend.store() as reader, backend.store() as writer:
            writer = writer if backend.shared else reader
            feed, other = "f" + uuid.uuid4().hex[:8], "g" + uuid.uuid4().hex[:8]
            assert await reader.feed_read(feed, "", 10) == ([], "0-0")
            cursors = [await writer.feed_append(feed, f"entry {n} 𠮷", 60) for n in range(5)]
            assert sorted(cursors, key=cursor_order) == cursors
            assert len(set(cursors)) == 5
            found, cursor = await reader.feed_read(feed, "", 10)
            assert found == [(c, f"entry {n} 𠮷") for n, c in enumerate(cursors)]
            assert cursor == cursors[-1]
            assert await reader.feed_read(feed, cursors[1], 2) == (
                [(cursors[2], "entry 2 𠮷"), (cursors[3], "entry 3 𠮷")],
                cursors[3],
            )
            assert await reader.feed_read(feed, cursors[-1], 10) == ([], cursors[-1])
            assert await reader.feed_read(other, "", 10) == ([], "0-0")
            async with reader.feed_subscribe(feed) as waiter:
                await writer.feed_append(other, "elsewhere", 60)
                assert not await waiter.wait(0.3)  # another feed's append wakes no one here
                appended = await writer.feed_append(feed, "late", 60)
                assert await waiter.wait(5)
            assert await reader.feed_read(feed, cursors[-1], 10) == ([(appended, "late")], appended)

    run(body)


def test_sentinel_round_trip(redis_sentinel: RedisSentinelGroup) -> None:
    backend = Backend("sentinel", redis_sentinel.url, None, "t" + uuid.uuid4().hex[:10])

    async def body() -> None:
        async with backend.store() as listener, backend.store() as actor:
            await actor.ping()
            qr_id = new_id()
            await actor.create_qr(qr_id, qr_record(), 30)
            async with listener.subscribe(qr_id) as waiter:
                ok, after = await actor.transition_qr(qr_id, machine.plan(QrEvent.SCAN), time.time())
                assert ok
                assert after is not None
                assert after["state"] == "scanned"
                assert await waiter.wait(5)
            assert await listener.get_qr(qr_id) == after
            assert await actor.hit("k", 10) == 1
            await actor.put("v", {"a": "b"}, 10)
            assert await listener.take("v") == {"a": "b"}

    run(body)


# Pub/sub gaps (Redis only) ----------------------------------------------------------------------


def _redis_ports(backend: Backend, request: pytest.FixtureRequest) -> list[int]:
    if backend.server is not None:
        return [backend.server.port]
    cluster: RedisClusterGroup = request.getfixturevalue("redis_cluster")
    return cluster.ports


def test_pubsub_connection_loss_wakes_waiters_and_fanout_recovers(
    redis_backend: Backend, request: pytest.FixtureRequest
) -> None:
    """Redis stays up but drops the pub/sub connection: a wake-up published in the gap is not lost,
    because the waiter is woken after the reconnect and reads the state again."""
    backend = redis_backend
    ports = _redis_ports(backend, request)

    async def body() -> None:
        async with backend.store() as listener, backend.store() as actor:
            assert isinstance(listener, RedisStore)
            qr_id = new_id()
            await actor.create_qr(qr_id, qr_record(), 30)
            async with listener.subscribe(qr_id) as waiter:
                for port in ports:
                    with sync_client(port) as admin:
                        command(admin, "CLIENT", "KILL", "TYPE", "pubsub")
                assert await waiter.wait(5)  # woken by the reconnect: read again
                assert listener.fanout.reconnects >= 1
                ok, _ = await actor.transition_qr(qr_id, machine.plan(QrEvent.SCAN), time.time())
                assert ok
                assert await waiter.wait(5)

    run(body)


def test_idle_fanout_health_checks_keep_it_connected(redis_backend: Backend) -> None:
    backend = redis_backend

    async def body() -> None:
        store = RedisStore.from_url(backend.url, prefix=backend.prefix, health_interval=0.2, **FAST)
        await store.start()
        try:
            qr_id = new_id()
            await store.create_qr(qr_id, qr_record(), 30)
            async with store.subscribe(qr_id) as waiter:
                await asyncio.sleep(1.0)  # about five health checks: PING answered, no reconnect
                assert store.fanout.reconnects == 0
                assert not await waiter.wait(0)
                assert (await store.transition_qr(qr_id, machine.plan(QrEvent.SCAN), time.time()))[0]
                assert await waiter.wait(5)
        finally:
            await store.close()

    run(body)


# Outages (Redis only) ---------------------------------------------------------------------------


async def _eventually(check: Callable[[], Awaitable[object]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await check()
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def test_outage_becomes_store_unavailable_and_service_resumes(redis_server: RedisServer) -> None:
    backend = Backend("redis", redis_server.url, redis_server, "outage")

    async def body() -> None:
        async with backend.store() as store, backend.store() as other:
            qr_id = new_id()
            await store.create_qr(qr_id, qr_record(), 30)
            async with store.subscribe(qr_id) as waiter:
                redis_server.stop()
                calls: list[Awaitable[object]] = [
                    store.ping(),
                    store.get_qr(qr_id),
                    store.create_qr(new_id(), qr_record(), 30),
                    store.transition_qr(qr_id, machine.plan(QrEvent.SCAN), time.time()),
                    store.hit("k", 30),
                    store.put("k", {"a": "b"}, 30),
                    store.get("k"),
                    store.take("k"),
                    store.delete("k"),
                ]
                results = await asyncio.gather(*calls, return_exceptions=True)
                for result in results:
                    assert isinstance(result, StoreUnavailable), result
                    assert result.status == 503
                    assert result.headers["Retry-After"]
                assert not await waiter.wait(0.2)  # nobody can have changed anything

                redis_server.start()  # same port, empty (no persistence)
                await _eventually(store.ping)
                # the waiter registered before the outage is woken once the fan-out is back
                assert await waiter.wait(10)
                assert await store.get_qr(qr_id) is None
                await other.create_qr(qr_id, qr_record(), 30)
                ok, _ = await other.transition_qr(qr_id, machine.plan(QrEvent.SCAN), time.time())
                assert ok
                assert await waiter.wait(5)  # and wake-ups flow again
            assert await store.hit("k", 30) == 1
            await store.put("k", {"a": "b"}, 30)
            assert await store.take("k") == {"a": "b"}

    run(body)


def test_waiter_registered_during_an_outage_is_woken_after_it(redis_server: RedisServer) -> None:
    backend = Backend("redis", redis_server.url, redis_server, "outage2")

    async def body() -> None:
        async with backend.store() as store:
            await store.ping()
            redis_server.stop()
            with pytest.raises(StoreUnavailable):
                await store.ping()
            async with store.subscribe("q1") as waiter:  # entering does not fail during an outage
                redis_server.start()
                assert await waiter.wait(10)
            await store.ping()

    run(body)


# URLs -------------------------------------------------------------------------------------------


NONE = (None, None)  # no user, no password


@pytest.mark.parametrize(
    ("url", "kind", "addresses", "credentials", "db"),
    [
        ("redis://127.0.0.1:6379/0", "standalone", [("127.0.0.1", 6379)], NONE, 0),
        ("rediss://user:secret@cache.example:6380/1", "standalone", [("cache.example", 6380)], ("user", "secret"), 1),
        ("unix:///run/redis.sock?db=3", "standalone", ["/run/redis.sock"], NONE, 3),
        (
            "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster?db=2&sentinel_password=s",
            "sentinel",
            [("10.0.0.1", 26379), ("10.0.0.2", 26379)],
            (None, "pw"),
            2,
        ),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
            "cluster",
            [("10.0.0.1", 7000), ("10.0.0.2", 7001)],
            (None, None),
            0,
        ),
        ("rediss+cluster://user:pw@[::1]:7000", "cluster", [("::1", 7000)], ("user", "pw"), 0),
    ],
)
def test_redis_url_forms(url: str, kind: str, addresses: list[Any], credentials: tuple[Any, Any], db: int) -> None:
    target = parse_redis_url(url)
    assert target.kind == kind
    assert list(target.addresses) == addresses
    assert (target.username, target.password) == credentials
    assert target.db == db
    assert (target.tls is not None) == url.startswith("rediss")
    if kind == "sentinel":
        assert (target.service, target.sentinel_password) == ("mymaster", "s")


def test_tls_options_of_a_url_mean_what_they_mean_to_redis_py() -> None:
    """Certificate and host name checked unless the URL says otherwise."""
    checked = parse_redis_url("rediss://cache.example:6380").tls
    assert checked is not None
    context = checked.context()
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    relaxed = parse_redis_url("rediss://cache.example:6380?ssl_cert_reqs=none&ssl_check_hostname=false").tls
    assert relaxed is not None
    context = relaxed.context()
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost",
        "redis+sentinel://h:1",
        "redis+cluster://",
        "redis+cluster://h:x",
        "redis+cluster://h:1?x=1",
        "redis://h:1/0?db=x",
        "rediss://h:1?ssl_cert_reqs=sometimes",
        "rediss://h:1?ssl_unheard_of=1",
    ],
)
def test_bad_redis_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_redis_url(url)


# Live QR codes (reserve_live): the mint's caps per address and per store ----------------------------


def test_live_entries_are_capped_per_group_and_per_store(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as store:
            group_a, group_b = "a" + new_id(), "b" + new_id()
            now = time.time()
            reserve = store.reserve_live
            assert await reserve(group_a, "m1", now + 60, now, group_max=2, total_max=3) == "reserved"
            assert await reserve(group_a, "m1", now + 60, now, group_max=2, total_max=3) == "reserved"  # a repeat
            assert await reserve(group_a, "m2", now + 60, now, group_max=2, total_max=3) == "reserved"
            assert await reserve(group_a, "m3", now + 60, now, group_max=2, total_max=3) == "group_full"
            assert await reserve(group_b, "m4", now + 60, now, group_max=2, total_max=3) == "reserved"
            assert await reserve(group_b, "m5", now + 60, now, group_max=2, total_max=3) == "store_full"
            await store.release_live(group_a, "m1")  # finished: no longer live
            await store.release_live(group_a, "m1")  # harmless to repeat
            assert await reserve(group_a, "m3", now + 60, now, group_max=2, total_max=3) == "reserved"
            # Entries past their expiry are no longer counted.
            later = now + 61
            assert await reserve(group_a, "m6", later + 60, later, group_max=2, total_max=3) == "reserved"
            assert await reserve(group_b, "m7", later + 60, later, group_max=2, total_max=3) == "reserved"

    run(body)


def test_live_reservations_racing_from_two_stores_never_pass_the_cap(backend: Backend) -> None:
    async def body() -> None:
        async with backend.store() as one, backend.store() as two:
            stores = (one, two) if backend.shared else (one, one)
            group, now = "g" + new_id(), time.time()
            outcomes = await asyncio.gather(
                *(
                    stores[i % 2].reserve_live(group, f"m{i}", now + 60, now, group_max=7, total_max=1_000_000)
                    for i in range(40)
                )
            )
            assert outcomes.count("reserved") == 7
            assert outcomes.count("group_full") == 33

    run(body)
