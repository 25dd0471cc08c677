"""ASGI middleware: request-body size limit; request ids, access logs and latency metrics."""

from __future__ import annotations

import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import errors, logs, metrics


class BodyLimitMiddleware:
    """Refuse bodies over `limit` bytes with 413, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length_given = chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    announced = -1
                if announced < 0 or announced > self.limit:
                    await self._refuse(scope, receive, send)
                    return
                length_given = True
            elif name == b"transfer-encoding":
                chunked = True
        if length_given and not chunked:
            # The server reads exactly the announced length (HTTP/1.1 framing): nothing to count.
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise errors.PayloadTooLarge(f"The request body must be at most {self.limit} bytes.")
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = errors.PayloadTooLarge(f"The request body must be at most {self.limit} bytes.")
        await errors.problem_response(error)(scope, receive, send)


_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{8,64}")


class ObserveMiddleware:
    """Per request: a request id (kept from a sane X-Request-ID, else new), one JSON log line and
    the latency histogram, labelled by route template (never by raw path: ids are not labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"")
        rid = incoming.decode() if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = route_template(scope)
            outcome = f"{status // 100}xx" if status != 499 else "499"  # 499: the client hung up first
            metrics.labelled(metrics.REQUEST_LATENCY, route, scope["method"], outcome).observe(
                time.perf_counter() - started
            )
            client = scope.get("client")
            logs.request_line(scope["method"], route, status, started, client[0] if client else "")
            logs.request_id.reset(token)


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return str(scope.get("root_path", "")) + path
    return "unmatched"
