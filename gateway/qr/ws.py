"""WebSocket adapter: the desktop waits for its QR's events.

After `hello` the server sends `state` (always first, also on every reconnect), then `scanned`,
then one terminal message (`confirmed` with the tokens, `cancelled` or `expired`) and closes 1000.
The socket never trusts a pub/sub message's content: a wake-up only makes it read the record again,
so nothing is lost to a reconnect, an instance change or a pub/sub gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway import errors, metrics
from gateway.components import Gateway, gateway_of
from gateway.jsonutil import JSONDecodeError, dumps, loads
from gateway.qr.machine import QrRecord, QrState
from gateway.qr.service import view
from gateway.state.base import Waiter
from gateway.tokens.claims import TokenResponse

log = logging.getLogger("qrgate.ws")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_HELLO = 4400
CLOSE_BAD_WAITER = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_DELIVERED = 4409
CLOSE_BY_CAUSE = {
    "invalid_waiter_token": CLOSE_BAD_WAITER,
    "qr_not_found": CLOSE_NOT_FOUND,
}


class ClosedByClient(Exception):
    pass


async def _send(ws: WebSocket, message: dict[str, Any]) -> None:
    await ws.send_text(dumps(message).decode())


async def _read_hello(ws: WebSocket, timeout: float) -> str | None:
    try:
        async with asyncio.timeout(timeout):
            message = await ws.receive()
    except TimeoutError:
        return None
    if message["type"] == "websocket.disconnect":
        raise ClosedByClient
    raw = message.get("text") if message.get("text") is not None else message.get("bytes")
    try:
        data = loads(raw) if raw is not None else None
    except JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("type") != "hello":
        return None
    token = data.get("waiter_token")
    return token if isinstance(token, str) and 0 < len(token) <= 128 else None


async def qr_events(ws: WebSocket) -> None:
    gw = gateway_of(ws)
    qr_id: str = ws.path_params["qr_id"]
    await ws.accept()
    try:
        token = await _read_hello(ws, gw.settings.hello_timeout)
        if token is None:
            await ws.close(CLOSE_BAD_HELLO, "expected {type: hello, waiter_token} first")
            return
        await _stream(ws, gw, qr_id, token)
    except (ClosedByClient, WebSocketDisconnect):
        return
    except errors.ServiceUnavailable as exc:
        # The store is down: the client should come back shortly (to this or another process).
        metrics.labelled(metrics.BACKEND_ERRORS, "store").inc()
        log.warning("store unavailable on a waiting socket: %r", exc.__cause__)
        await _close_quietly(ws, CLOSE_TRY_AGAIN, "temporarily unavailable, reconnect")


async def _close_quietly(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code, reason)


async def _watch_client(ws: WebSocket, waiter: Waiter, gone: asyncio.Event) -> None:
    """Read (and ignore) what the client sends after hello; notice when it leaves."""
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        gone.set()
        waiter.wake()


async def _stream(ws: WebSocket, gw: Gateway, qr_id: str, waiter_token: str) -> None:
    gone = asyncio.Event()
    async with gw.store.subscribe(qr_id) as waiter:
        watcher = asyncio.create_task(_watch_client(ws, waiter, gone))
        metrics.WAITING_WEBSOCKETS.inc()
        gw.draining.socket_opened()
        gw.draining.hold(waiter)  # on shutdown, woken to close with 1001
        try:
            await _send_events(ws, gw, qr_id, waiter_token, waiter, gone)
        finally:
            metrics.WAITING_WEBSOCKETS.dec()
            gw.draining.socket_closed()
            gw.draining.release(waiter)
            watcher.cancel()


async def _send_events(
    ws: WebSocket, gw: Gateway, qr_id: str, waiter_token: str, waiter: Waiter, gone: asyncio.Event
) -> None:
    try:
        # One read, after registering the waiter (so no change can slip in between), that also
        # checks the waiter token.
        record = await gw.qr.record_for_waiter(qr_id, waiter_token)
    except errors.ServiceUnavailable:
        raise
    except errors.GatewayError as exc:
        await ws.close(CLOSE_BY_CAUSE.get(exc.code, CLOSE_BAD_HELLO), exc.detail[:120])
        return
    now = time.time()
    current = view(record, now)
    state = QrState(current["state"])
    if state is QrState.DELIVERED:
        await ws.close(CLOSE_DELIVERED, "the result was already delivered")
        return
    await _send(ws, {"type": "state", **current})
    announced = state
    while True:
        if state is QrState.CONFIRMED:  # at hello: confirmed while this desktop was away
            tokens, _ = await gw.qr.take_delivery(qr_id)
            if tokens is not None:
                await _send_tokens(ws, tokens, record)
                return
            await ws.close(CLOSE_DELIVERED, "the result was already delivered")
            return
        if state in (QrState.CANCELLED, QrState.EXPIRED):
            if state is QrState.EXPIRED:
                metrics.labelled(metrics.QR_EVENTS, "expire").inc()
            await _send(ws, {"type": state.value})
            await ws.close(CLOSE_NORMAL)
            return
        if state is QrState.DELIVERED:
            await ws.close(CLOSE_DELIVERED, "the result was already delivered")
            return
        if state is QrState.SCANNED and announced is not QrState.SCANNED:
            await _send(ws, {"type": "scanned", "scanner": {"display_name": record.scanner_name}})
        announced = state
        until_expiry = record.expires_at - time.time()
        await waiter.wait(max(0.0, until_expiry + 0.01))
        if gone.is_set():
            return
        if gw.draining.closing.is_set():
            await ws.close(CLOSE_GOING_AWAY, "server shutting down, reconnect")
            return
        # Something changed (or the code expired): one call that takes delivery if it is due,
        # and otherwise reads the state.
        tokens, found = await gw.qr.take_delivery(qr_id)
        if tokens is not None:
            await _send_tokens(ws, tokens, found or record)
            return
        if found is None:
            await ws.close(CLOSE_NOT_FOUND, "the QR code was purged")
            return
        record = found
        state = record.state_at(time.time())
        if state is QrState.CONFIRMED:  # confirmed, yet delivery refused: delivered elsewhere
            await ws.close(CLOSE_DELIVERED, "the result was already delivered")
            return


async def _send_tokens(ws: WebSocket, tokens: TokenResponse, record: QrRecord) -> None:
    await _send(ws, {"type": "confirmed", "token": tokens})
    if record.confirmed_at is not None:
        metrics.PUSH_LATENCY.observe(max(0.0, time.time() - record.confirmed_at))
    await ws.close(CLOSE_NORMAL)
