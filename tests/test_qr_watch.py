"""The one QR waiting loop (gateway/qr/watch.py) that feeds the WebSocket and the long-poll, driven
with scripted store answers: what each step reads, and why a watch ends."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway import errors
from gateway.qr.machine import QrRecord, QrState
from gateway.qr.watch import QrWatch, WatchEnd
from gateway.state.base import Waiter
from gateway.tokens.claims import TokenResponse

pytestmark = pytest.mark.anyio

TOKENS: TokenResponse = {"access_token": "a", "token_type": "Bearer", "expires_in": 600, "refresh_token": "r"}
Answer = tuple[TokenResponse | None, QrRecord | None]
SIGNIN = "sso-signin"  # a client whose results are kept for the server


def record(state: QrState, *, lifetime: float = 60.0, client_id: str = "desktop") -> QrRecord:
    now = time.time()
    return QrRecord(
        state=state,
        expires_at=now + lifetime,
        created_at=now,
        client_id=client_id,
        device_name="PC-01",
        dpop_jkt="",
        waiter_hash="",
        ip="",
        user_agent="",
        scanner_sub="" if state is QrState.PENDING else "p1",
        scanner_name="" if state is QrState.PENDING else "张*",
        confirmed_at=now if state in (QrState.CONFIRMED, QrState.DELIVERED) else None,
    )


class Store:
    """Answers the watch's reads: `first` for the first, then `answers` in order (reads after the
    first, as a kept code's watch makes them, answer `then`)."""

    def __init__(self, first: QrRecord, *answers: Answer, then: QrRecord | None = None) -> None:
        self.first = first
        self.answers = list(answers)
        self.then = then
        self.takes = 0
        self.reads = 0

    async def read(self) -> QrRecord:
        self.reads += 1
        return self.first if self.reads == 1 or self.then is None else self.then

    async def take_delivery(self) -> Answer:
        self.takes += 1
        return self.answers.pop(0)


def watching(store: Store, *, wait: float | None = None) -> tuple[QrWatch, Waiter, asyncio.Event]:
    waiter, closing = Waiter(), asyncio.Event()
    deadline = None if wait is None else time.monotonic() + wait
    watch = QrWatch(
        read=store.read,
        take_delivery=store.take_delivery,
        waiter=waiter,
        closing=closing,
        deadline=deadline,
        keeps=lambda found: found.client_id == SIGNIN,
    )
    return watch, waiter, closing


async def test_a_wake_up_reads_the_record_again() -> None:
    scanned = record(QrState.SCANNED)
    store = Store(record(QrState.PENDING), (None, scanned))
    watch, waiter, _ = watching(store)
    assert (await watch.first()).state is QrState.PENDING
    waiter.wake()
    seen = await watch.next()
    assert seen is not None
    assert (seen.state, seen.final, store.takes) == (QrState.SCANNED, False, 1)
    assert seen.view(time.time()) == {"state": "scanned", "expires_in": 60, "scanner": {"display_name": "张*"}}


async def test_confirmed_takes_delivery_at_once_and_ends() -> None:
    store = Store(record(QrState.CONFIRMED), (TOKENS, record(QrState.DELIVERED)))
    watch, _, _ = watching(store)
    await watch.first()
    seen = await watch.next()  # no wake-up needed: delivery is due
    assert seen is not None
    assert seen.final
    assert seen.view(time.time()) == {
        "state": "confirmed",
        "expires_in": 60,
        "scanner": {"display_name": "张*"},
        "token": TOKENS,
    }
    assert await watch.next() is None
    assert (watch.ended, store.takes) == (WatchEnd.FINAL, 1)


async def test_a_delivery_taken_elsewhere_reads_as_delivered() -> None:
    store = Store(record(QrState.CONFIRMED), (None, record(QrState.DELIVERED)))
    watch, _, _ = watching(store)
    await watch.first()
    seen = await watch.next()
    assert seen is not None
    assert (seen.state, seen.tokens, seen.final) == (QrState.DELIVERED, None, True)


async def test_the_long_poll_wait_reads_once_more_then_ends() -> None:
    pending = record(QrState.PENDING)
    store = Store(pending, (None, pending))
    watch, _, _ = watching(store, wait=0.05)
    await watch.first()
    seen = await watch.next()  # the wait is up: one more read, as a lost wake-up costs only latency
    assert seen is not None
    assert seen.state is QrState.PENDING
    assert await watch.next() is None
    assert (watch.ended, store.takes) == (WatchEnd.DEADLINE, 1)


async def test_expiry_wakes_the_watch() -> None:
    short = record(QrState.PENDING, lifetime=0.05)
    store = Store(short, (None, short))
    watch, _, _ = watching(store)
    await watch.first()
    seen = await watch.next()
    assert seen is not None
    assert seen.state is QrState.EXPIRED
    assert seen.final


async def test_shutdown_ends_the_watch_without_reading() -> None:
    store = Store(record(QrState.PENDING))
    watch, waiter, closing = watching(store)
    await watch.first()
    waiting = asyncio.create_task(watch.next())
    await asyncio.sleep(0.01)
    closing.set()
    waiter.wake()
    assert await waiting is None
    assert (watch.ended, store.takes) == (WatchEnd.DRAINING, 0)


async def test_stop_ends_the_watch_without_reading() -> None:
    store = Store(record(QrState.SCANNED))
    watch, _, _ = watching(store)
    await watch.first()
    waiting = asyncio.create_task(watch.next())
    await asyncio.sleep(0.01)
    watch.stop()
    assert await waiting is None
    assert (watch.ended, store.takes) == (WatchEnd.STOPPED, 0)


async def test_a_purged_code_is_not_found() -> None:
    store = Store(record(QrState.PENDING), (None, None))
    watch, waiter, _ = watching(store)
    await watch.first()
    waiter.wake()
    with pytest.raises(errors.NotFound):
        await watch.next()


# --- codes whose result the server keeps (the browser sign-in page's) --------------------------------


async def test_a_kept_result_is_announced_without_tokens_and_never_delivered() -> None:
    store = Store(record(QrState.CONFIRMED, client_id=SIGNIN))
    watch, _, _ = watching(store)
    seen = await watch.first()
    assert (seen.state, seen.kept, seen.final, seen.tokens) == (QrState.CONFIRMED, True, True, None)
    assert seen.view(time.time()) == {"state": "confirmed", "expires_in": 60, "scanner": {"display_name": "张*"}}
    assert await watch.next() is None
    assert (watch.ended, store.takes) == (WatchEnd.FINAL, 0)


async def test_a_wake_up_on_a_kept_code_only_reads() -> None:
    store = Store(record(QrState.SCANNED, client_id=SIGNIN), then=record(QrState.CONFIRMED, client_id=SIGNIN))
    watch, waiter, _ = watching(store)
    await watch.first()
    waiter.wake()
    seen = await watch.next()
    assert seen is not None
    assert (seen.state, seen.kept, seen.final, store.takes, store.reads) == (QrState.CONFIRMED, True, True, 0, 2)


async def test_a_kept_result_taken_by_the_server_reads_as_delivered() -> None:
    store = Store(record(QrState.SCANNED, client_id=SIGNIN), then=record(QrState.DELIVERED, client_id=SIGNIN))
    watch, waiter, _ = watching(store)
    await watch.first()
    waiter.wake()
    seen = await watch.next()
    assert seen is not None
    assert (seen.state, seen.kept, seen.final, store.takes) == (QrState.DELIVERED, False, True, 0)
