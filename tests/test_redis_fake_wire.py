"""The wire's reply branches that a live Redis will not produce on demand, against scripted fake
servers (tests/support/fake_redis.py) reached through the connection opener seam: -TRYAGAIN and
-LOADING are waited out, -READONLY leaves the connection, a reply cut off mid-way is retried only when
that is safe, -MOVED and -ASK are followed to the right node, and a subscription whose slot moves is
made again on the slot's new owner. No redis-server needed; what a live server does is tested in
test_redis_wire.py and test_store_contract.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from gateway.state.base import StoreUnavailable
from gateway.state.redis import RedisStore
from gateway.state.redis_clients import (
    COMMAND_BACKOFF_CAP,
    COMMAND_BACKOFF_FIRST,
    RECONNECT_BACKOFF_CAP,
    RECONNECT_BACKOFF_FIRST,
    command_backoff,
    parse_redis_url,
    reconnect_backoff,
    slot_of,
)
from gateway.state.redis_clients import exceptions as rx
from gateway.state.wire import Wire
from tests.support.fake_redis import OK, FakeCluster, FakeNode, FakeRedis, error, resp

pytestmark = pytest.mark.timeout(10)

ADDRESS = ("10.0.0.1", 6379)
URL = "redis://10.0.0.1:6379/0"
READONLY = "READONLY You can't write against a read only replica."


def run(body: Callable[[FakeRedis], Coroutine[Any, Any, None]]) -> None:
    """Run `body` with fresh fake servers; fail if any got a command no test scripted."""
    fake = FakeRedis()
    asyncio.run(body(fake))
    assert fake.unexpected == []


def wire_on(fake: FakeRedis, url: str = URL, *, retries: int = 3) -> Wire:
    return Wire(parse_redis_url(url), socket_timeout=1.0, connect_timeout=1.0, retries=retries, opener=fake.open)


def store_on(fake: FakeRedis, url: str = URL, *, retries: int = 3) -> RedisStore:
    """A store on the fake servers, whose fan-out reconnects quickly."""
    return RedisStore(
        parse_redis_url(url),
        opener=fake.open,
        retries=retries,
        backoff=reconnect_backoff(0.01, 0.05),
        confirm_timeout=1.0,
    )


# Back off and again -----------------------------------------------------------------------------


def test_tryagain_is_sent_again_after_a_wait_and_succeeds() -> None:
    """TRYAGAIN (a multi-key command during a slot migration): the command did not run, so even a
    write that is not idempotent is sent again, after the first wait."""

    async def body(fake: FakeRedis) -> None:
        node = fake.node(ADDRESS)
        node.expect("INCR", "n", reply=error("TRYAGAIN Multiple keys request during rehashing of slot"))
        node.expect("INCR", "n", reply=resp(1))
        wire = wire_on(fake)
        try:
            started = asyncio.get_running_loop().time()
            assert await wire.call("n", "INCR", "n", idempotent=False) == 1
            assert asyncio.get_running_loop().time() - started >= COMMAND_BACKOFF_FIRST / 2
            assert node.commands("INCR") == [("INCR", "n")] * 2
        finally:
            await wire.close()

    run(body)


def test_loading_is_waited_out() -> None:
    async def body(fake: FakeRedis) -> None:
        node = fake.node(ADDRESS)
        for _ in range(2):
            node.expect("HGETALL", reply=error("LOADING Redis is loading the dataset in memory"))
        node.expect("HGETALL", reply=resp(["a", "b"]))
        store = store_on(fake)
        try:
            assert await store.get("k") == {"a": "b"}
            assert len(node.commands("HGETALL")) == 3
        finally:
            await store.close()

    run(body)


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [("TRYAGAIN Multiple keys request during rehashing of slot", rx.TryAgainError), (READONLY, rx.ReadOnlyError)],
)
def test_a_server_that_keeps_refusing_is_a_503_once_the_retries_are_spent(
    reply: str, error_type: type[Exception]
) -> None:
    async def body(fake: FakeRedis) -> None:
        node = fake.node(ADDRESS)
        node.always("EVALSHA", reply=error(reply))
        store = store_on(fake, retries=2)
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await store.put("k", {"a": "b"}, 30)
            assert caught.value.status == 503
            assert isinstance(caught.value.__cause__, error_type)
            assert len(node.commands("EVALSHA")) == 3  # the first try and two retries
        finally:
            await store.close()

    run(body)


# A demoted master ---------------------------------------------------------------------------------


def test_readonly_leaves_the_connection_and_the_write_lands_on_a_new_one() -> None:
    """READONLY: the server was demoted (a failover). The wire connects again (behind Sentinel that
    asks for the new master) and sends the write there."""

    async def body(fake: FakeRedis) -> None:
        node = fake.node(ADDRESS)
        node.expect("SET", reply=error(READONLY))
        node.expect("SET", reply=OK)
        wire = wire_on(fake)
        try:
            assert await wire.call("k", "SET", "k", "v", idempotent=False) == "OK"
            assert wire.connects == 2
            first, second = node.connections
            assert first.closed
            assert first.received[-1] == second.received[-1] == ("SET", "k", "v")
        finally:
            await wire.close()

    run(body)


# Connections lost mid-reply -----------------------------------------------------------------------


def test_a_read_whose_reply_is_cut_off_is_sent_again_on_a_new_connection() -> None:
    async def body(fake: FakeRedis) -> None:
        node = fake.node(ADDRESS)
        node.expect("GET", "k", reply=b"$5\r\nva", drop=True)  # half a bulk string, then the connection is gone
        node.expect("GET", "k", reply=resp("value"))
        wire = wire_on(fake)
        try:
            assert await wire.call("k", "GET", "k", idempotent=True) == "value"
            assert wire.connects == 2
        finally:
            await wire.close()

    run(body)


def test_a_write_whose_reply_is_cut_off_is_not_sent_again_and_is_a_503() -> None:
    """Whether the count was made is unknown: counting twice would be worse than a 503."""

    async def body(fake: FakeRedis) -> None:
        node = fake.node(ADDRESS)
        node.expect("EVALSHA", reply=b":", drop=True)
        store = store_on(fake)
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await store.hit("attempts", 30)
            assert isinstance(caught.value.__cause__, rx.ConnectionError)
            assert len(node.commands("EVALSHA")) == 1
        finally:
            await store.close()

    run(body)


# Cluster redirects --------------------------------------------------------------------------------


def test_moved_reads_the_slot_map_again_and_follows_it() -> None:
    """The slot moved to another master since this process read the map: MOVED, the map is read
    again, the command goes to the new owner, and so do the next ones."""

    async def body(fake: FakeRedis) -> None:
        cluster = FakeCluster(fake, [7000, 7001, 7002])
        wire = wire_on(fake, cluster.url)
        try:
            await wire.ready()
            slot = slot_of("k")
            old = cluster.owner(slot)
            new = cluster.other_than(old)
            cluster.move(slot, new)
            old.expect("GET", "k", reply=error(f"MOVED {slot} {new.name}"))
            new.expect("GET", "k", reply=resp("v"))
            new.expect("GET", "k", reply=resp("v2"))
            assert await wire.call("k", "GET", "k", idempotent=True) == "v"
            assert await wire.call("k", "GET", "k", idempotent=True) == "v2"
            assert old.commands("GET") == [("GET", "k")]
            assert cluster.slots_asked == 2  # the first read and the one MOVED asked for
        finally:
            await wire.close()

    run(body)


def test_ask_sends_asking_then_the_command_to_the_importing_node_and_keeps_the_map() -> None:
    """Mid-migration, a key the source no longer has: ASKING and the command go to the target, once;
    the slot still belongs to the source, so the next command goes there again."""

    async def body(fake: FakeRedis) -> None:
        cluster = FakeCluster(fake, [7000, 7001, 7002])
        wire = wire_on(fake, cluster.url)
        try:
            slot = slot_of("k")
            source = cluster.owner(slot)
            target = cluster.other_than(source)
            source.expect("GET", "k", reply=error(f"ASK {slot} {target.name}"))
            target.expect("GET", "k", reply=resp("moved already"))
            source.expect("GET", "k", reply=resp("still here"))
            assert await wire.call("k", "GET", "k", idempotent=True) == "moved already"
            assert target.connections[0].received[-2:] == [("ASKING",), ("GET", "k")]
            assert await wire.call("k", "GET", "k", idempotent=True) == "still here"
            assert cluster.slots_asked == 1
        finally:
            await wire.close()

    run(body)


# Subscriptions whose slot moves -------------------------------------------------------------------


async def _woken_by_a_change_on(node: FakeNode, channel: str, woken: Callable[[], Coroutine[Any, Any, bool]]) -> None:
    node.push(resp(["smessage", channel, "scanned"]))
    assert await woken()


def test_moved_in_reply_to_ssubscribe_subscribes_on_the_new_owner() -> None:
    """The slot of a QR's channel moved before this process noticed: SSUBSCRIBE goes to the old owner,
    which answers MOVED. The fan-out reads the map again, subscribes on the new owner and wakes the
    waiter (it reads the state again); changes published there wake it too."""

    async def body(fake: FakeRedis) -> None:
        cluster = FakeCluster(fake, [7000, 7001, 7002])
        store = store_on(fake, cluster.url)
        try:
            await store.start()
            await store.ping()  # the slot map is read
            channel = store.qr_channel("q1")
            slot = slot_of(channel)
            old = cluster.owner(slot)
            new = cluster.other_than(old)
            cluster.move(slot, new)
            old.expect("SSUBSCRIBE", channel, reply=error(f"MOVED {slot} {new.name}"))
            async with store.subscribe("q1") as waiter:
                assert await waiter.wait(2)
                assert new.commands("SSUBSCRIBE") == [("SSUBSCRIBE", channel)]
                await _woken_by_a_change_on(new, channel, lambda: waiter.wait(2))
        finally:
            await store.close()

    run(body)


@pytest.mark.parametrize("moment", ["while subscribing", "after subscribing"])
def test_a_slot_moved_away_from_a_subscription_is_subscribed_again_on_its_new_owner(moment: str) -> None:
    """A migration ends: the old owner drops the slot's shard subscriptions (it sends SUNSUBSCRIBE),
    right after confirming ours or later. The fan-out starts over: the map read again, SSUBSCRIBE on
    the new owner, the waiter woken to read the state again."""

    async def body(fake: FakeRedis) -> None:
        cluster = FakeCluster(fake, [7000, 7001, 7002])
        store = store_on(fake, cluster.url)
        try:
            await store.start()
            await store.ping()
            channel = store.qr_channel("q1")
            slot = slot_of(channel)
            old = cluster.owner(slot)
            new = cluster.other_than(old)
            dropped = resp(["sunsubscribe", channel, 0])
            if moment == "while subscribing":
                cluster.move(slot, new)
                old.expect("SSUBSCRIBE", channel, reply=resp(["ssubscribe", channel, 1]) + dropped)
            async with store.subscribe("q1") as waiter:
                if moment == "after subscribing":
                    assert old.commands("SSUBSCRIBE") == [("SSUBSCRIBE", channel)]
                    assert not await waiter.wait(0.05)
                    cluster.move(slot, new)
                    old.push(dropped)
                assert await waiter.wait(2)
                assert new.commands("SSUBSCRIBE") == [("SSUBSCRIBE", channel)]
                assert store.fanout.reconnects == 1
                await _woken_by_a_change_on(new, channel, lambda: waiter.wait(2))
        finally:
            await store.close()

    run(body)


# The waits ----------------------------------------------------------------------------------------


def test_the_waits_double_from_50_ms_up_to_their_caps() -> None:
    """The timings the settings and the docs state: commands 50 ms doubling to 500 ms (each wait drawn
    from its upper half), reconnects 50 ms doubling to 2 s."""
    assert (COMMAND_BACKOFF_FIRST, COMMAND_BACKOFF_CAP) == (0.05, 0.5)
    assert (RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_CAP) == (0.05, 2.0)
    commands, reconnects = command_backoff(), reconnect_backoff()
    for failures, ceiling in enumerate([0.05, 0.1, 0.2, 0.4, 0.5, 0.5], start=1):
        waits = [commands.compute(failures) for _ in range(200)]
        assert ceiling / 2 <= min(waits) <= max(waits) <= ceiling
    assert [reconnects.compute(failures) for failures in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
