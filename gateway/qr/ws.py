"""WebSocket adapter: the desktop waits for its QR's events.

After `hello` the server sends `state` (always first, also on every reconnect), then `scanned`,
then one terminal message (`confirmed` with the tokens, `cancelled` or `expired`) and closes 1000.
A code of the browser sign-in page keeps its result for the server: its `confirmed` has no `token`.
The waiting itself (wake-ups, re-reads, taking delivery once) is `gateway/qr/watch.py`, shared with
the long-poll; this module speaks the socket's messages and close codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway import errors, metrics
from gateway.draining import Draining
from gateway.jsonutil import JSONDecodeError, dumps, loads
from gateway.qr.machine import QrState
from gateway.qr.service import QrService
from gateway.qr.watch import QrWatch, Sighting, WatchEnd

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


class QrSocket:
    """`/v1/qr/{qr_id}/events`: hello, then the QR's events until one is final."""

    def __init__(self, qr: QrService, draining: Draining) -> None:
        self.qr = qr
        self.draining = draining

    async def events(self, ws: WebSocket) -> None:
        qr_id: str = ws.path_params["qr_id"]
        await ws.accept()
        try:
            token = await _read_hello(ws, self.qr.hello_timeout)
            if token is None:
                await ws.close(CLOSE_BAD_HELLO, "expected {type: hello, waiter_token} first")
                return
            await self._stream(ws, qr_id, token)
        except (ClosedByClient, WebSocketDisconnect):
            return
        except errors.ServiceUnavailable as exc:
            # The store is down: the client should come back shortly (to this or another process).
            metrics.labelled(metrics.BACKEND_ERRORS, "store").inc()
            log.warning("store unavailable on a waiting socket: %r", exc.__cause__)
            await _close_quietly(ws, CLOSE_TRY_AGAIN, "temporarily unavailable, reconnect")

    async def _stream(self, ws: WebSocket, qr_id: str, waiter_token: str) -> None:
        async with self.qr.watch(qr_id, waiter_token) as watch:
            watcher = asyncio.create_task(_watch_client(ws, watch))
            metrics.WAITING_WEBSOCKETS.inc()
            self.draining.socket_opened()  # shutdown waits (a while) for the sockets to close
            try:
                seen = await _send_events(ws, watch)
                if seen is not None and seen.state is QrState.EXPIRED:
                    await self.qr.note_expired(qr_id, seen.record)
            finally:
                metrics.WAITING_WEBSOCKETS.dec()
                self.draining.socket_closed()
                watcher.cancel()


async def _close_quietly(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code, reason)


async def _watch_client(ws: WebSocket, watch: QrWatch) -> None:
    """Read (and ignore) what the client sends after hello; notice when it leaves."""
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        watch.stop()


async def _send_events(ws: WebSocket, watch: QrWatch) -> Sighting | None:
    """Send the QR's events until a final one; the final sighting sent (None if none was)."""
    try:
        seen = await watch.first()  # also checks the waiter token
    except errors.ServiceUnavailable:
        raise
    except errors.GatewayError as exc:
        await ws.close(CLOSE_BY_CAUSE.get(exc.code, CLOSE_BAD_HELLO), exc.detail[:120])
        return None
    if seen.state is QrState.DELIVERED:
        await ws.close(CLOSE_DELIVERED, "the result was already delivered")
        return None
    await _send(ws, {"type": "state", **seen.view(time.time())})
    announced = seen.state
    while not seen.final:
        if seen.state is QrState.SCANNED and announced is not QrState.SCANNED:
            await _send(ws, {"type": "scanned", "scanner": {"display_name": seen.record.scanner_name}})
        announced = seen.state
        try:
            changed = await watch.next()
        except errors.NotFound:
            await ws.close(CLOSE_NOT_FOUND, "the QR code was purged")
            return None
        if changed is None:
            if watch.ended is WatchEnd.DRAINING:
                await ws.close(CLOSE_GOING_AWAY, "server shutting down, reconnect")
            return None  # or the client left
        seen = changed
    await _send_final(ws, seen)
    return seen


async def _send_final(ws: WebSocket, seen: Sighting) -> None:
    """The one terminal message (`confirmed` with the tokens, `cancelled` or `expired`), then close."""
    if seen.tokens is not None or seen.kept:
        # A kept result is announced only: the sign-in page then has the server take it.
        await _send(ws, {"type": "confirmed", "token": seen.tokens} if seen.tokens else {"type": "confirmed"})
        if seen.record.confirmed_at is not None:
            metrics.PUSH_LATENCY.observe(max(0.0, time.time() - seen.record.confirmed_at))
        await ws.close(CLOSE_NORMAL)
        return
    if seen.state is QrState.DELIVERED:  # to another connection
        await ws.close(CLOSE_DELIVERED, "the result was already delivered")
        return
    await _send(ws, {"type": seen.state.value})
    await ws.close(CLOSE_NORMAL)
