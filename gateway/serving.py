"""The HTTP server's own defences, so that a gateway process needs no proxy to survive slow or greedy
clients: uvicorn's httptools protocol with limits on the request head, deadlines for the head and
the body, a cap on open connections, and problem+json for what it refuses.

- A request head (request line and headers together) over `max_header_bytes`: 431 `headers_too_large`.
  The head is counted as it arrives, so a client sending endless headers costs at most the limit
  plus one read (256 KiB), never what it sends.
- A connection that has not sent a complete head within `header_timeout` of opening (or, on a
  kept-alive connection, of the head's first byte) is closed, with 408 `request_timeout` if part of a
  head arrived; a body not complete within `body_timeout` of its head: 408, closed. A request whose
  body has arrived is the application's (a long-poll may wait), and an upgraded WebSocket is the
  WebSocket's: neither is timed here.
- An idle kept-alive connection is closed after `keep_alive_timeout` (uvicorn's own timer).
- Past `max_connections` open connections (WebSockets and long-polls count), a new connection is
  answered 503 `too_many_connections` at once and closed, before it can hold anything.
- What is not HTTP/1.1 gets 400 `malformed_request` instead of uvicorn's plain text.

Every refusal is one log line and one count in `qrgate_http_refusals_total{reason}`; the connection
is then half-closed and what the client still sends is read and dropped for a moment ("lingering
close"), so that the answer reaches a client that is still writing instead of being lost to a reset.
At most `MAX_LINGERING` connections linger at once, so that a flood of refusals cannot use up the
descriptors the operations port needs.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr

from gateway import errors, metrics
from gateway.jsonutil import dumps
from gateway.settings import Settings

log = logging.getLogger("qrgate.http")

LINGER_SECONDS = 1.0  # after a refusal, read and drop what the client still sends, at most this long
LINGER_MAX_BYTES = 1 << 20  # ... and at most this much
MAX_LINGERING = 64  # connections lingering at once; beyond, a refusal closes at once (descriptors stay free)
RESERVED_FILES = 256  # descriptors kept free of client connections: the operations port, Redis, the database
OPS_MAX_CONNECTIONS = 64  # the operations port serves probes and a scraper, not the public


class HeadersTooLarge(errors.GatewayError):
    status = 431
    code = "headers_too_large"
    title = "Request header fields too large"


class RequestTimeout(errors.GatewayError):
    status = 408
    code = "request_timeout"
    title = "Request timeout"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def of(cls, settings: Settings, *, max_connections: int | None = None) -> ServerLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            max_connections=settings.http_max_connections if max_connections is None else max_connections,
        )


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; `GuardedHttpProtocol._refusal` says why."""


def _refusal_bytes(problem: errors.GatewayError) -> bytes:
    body = dumps(problem.body())
    head = [
        STATUS_LINE[problem.status],
        b"content-type: application/problem+json\r\n",
        b"content-length: %d\r\n" % len(body),
    ]
    head += [f"{name.lower()}: {value}\r\n".encode("latin-1") for name, value in problem.response_headers().items()]
    return b"".join([*head, b"connection: close\r\n\r\n", body])


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above. `protocol_class(limits)` makes the
    subclass a server uses (uvicorn builds protocols from a class and its own config)."""

    limits: ClassVar[ServerLimits]
    _answers: ClassVar[dict[str, bytes]]
    lingering: ClassVar[int] = 0  # of this server's connections (each server has its own subclass)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = False  # a request head has begun and is not complete
        self._in_body = False  # a head is complete, its body is not
        self._head_bytes = 0  # bytes received since the head began (in reads after the first)
        self._head_size = 0  # the head's size as parsed so far
        self._refusal = ""
        self._lingering = False
        self._lingered = 0

    # The connection -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            self.client = get_remote_addr(transport)
            self._refuse("too_many_connections")
            return
        super().connection_made(transport)
        self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._lingering:
            type(self).lingering -= 1
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered += len(data)
            if self._lingered > LINGER_MAX_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self._cancel_timer()
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._refuse(self._refusal or "malformed_request")
            return
        if self._in_head:
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse("headers_too_large")
            elif self._timer is None:
                self._timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
        elif self._in_body and self._timer is None:
            self._timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    # Parser callbacks -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._head_size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, plus the head's size so far.
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.limits.max_header_bytes:
            self._refusal = "headers_too_large"
            raise _Refused
        name = name.lower()
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._head_size + len(self.url) > self.limits.max_header_bytes:
            self._refusal = "headers_too_large"
            raise _Refused
        super().on_headers_complete()
        self._in_body = not (self.parser.should_upgrade() and self._should_upgrade())

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().on_message_complete()

    # Deadlines and refusals -----------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._in_head:
            self._refuse("header_timeout")
        elif not self.transport.is_closing():  # not a byte of a request: nothing to answer, nothing to log
            metrics.labelled(metrics.HTTP_REFUSALS, "header_timeout").inc()
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.cycle is not None:
            self.cycle.scope["qrgate.timed_out"] = True  # type: ignore[typeddict-unknown-key]
        self._refuse("body_timeout")

    def _refuse(self, reason: str) -> None:
        """Answer with the refusal's problem (unless a response has begun), then close lingering."""
        self._cancel_timer()
        self._unset_keepalive_if_required()
        self.connections.discard(self)
        metrics.labelled(metrics.HTTP_REFUSALS, reason).inc()
        client = self.client[0] if self.client else ""
        log.info("refused", extra={"reason": reason, "client": client})
        cycle = self.cycle  # the request being read or answered, or the one answered before
        answer = cycle is None or cycle.response_complete or not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application's receive() says so; its answer is dropped
            cycle.message_event.set()
        if self.transport.is_closing():
            return
        if not answer:
            self.transport.close()
            return
        self.transport.write(self._answers[reason])
        if type(self).lingering >= MAX_LINGERING:
            self.transport.close()  # after the answer is written
            return
        type(self).lingering += 1
        self._lingering = True
        if self.flow is not None:
            self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def protocol_class(limits: ServerLimits) -> type[GuardedHttpProtocol]:
    """The protocol class for a server with these limits (uvicorn's `http=` takes a class)."""
    timeouts = RequestTimeout(
        f"The request head was not complete within {limits.header_timeout:g} s.",
    )
    answers = {
        "malformed_request": errors.BadRequest("The request is not valid HTTP/1.1.", code="malformed_request"),
        "headers_too_large": HeadersTooLarge(
            f"The request line and headers must be at most {limits.max_header_bytes} bytes together."
        ),
        "header_timeout": timeouts,
        "body_timeout": RequestTimeout(f"The request body was not complete within {limits.body_timeout:g} s."),
        "too_many_connections": errors.ServiceUnavailable(
            "This server has too many open connections; try again shortly.", code="too_many_connections", retry_after=1
        ),
    }
    attributes = {"limits": limits, "_answers": {reason: _refusal_bytes(p) for reason, p in answers.items()}}
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), attributes)


def connections_within_open_files(wanted: int) -> int:
    """Raise this process's open-files limit as far as allowed, and return how many client
    connections fit below it with `RESERVED_FILES` to spare (at most `wanted`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < target:
        raised = target if hard == resource.RLIM_INFINITY else min(hard, target)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY:
        return wanted
    room = max(1, soft - RESERVED_FILES)
    if room < wanted:
        log.warning(
            "the open-files limit (%d) allows %d client connections, fewer than QRGATE_HTTP_MAX_CONNECTIONS (%d)",
            soft,
            room,
            wanted,
        )
    return min(wanted, room)


def server_config(app: Any, settings: Settings, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the public port: the guarded protocol and our WebSocket settings."""
    limits = ServerLimits.of(settings)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(limits),
        ws="websockets-sansio",
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_interval,
        ws_max_size=settings.ws_max_message,
        ws_per_message_deflate=False,
        timeout_keep_alive=settings.http_keep_alive_timeout,
        **options,
    )


def ops_config(app: Any, settings: Settings, host: str) -> uvicorn.Config:
    """The operations port (`QRGATE_METRICS_PORT`): the same limits, a connection cap of its own."""
    limits = ServerLimits.of(settings, max_connections=OPS_MAX_CONNECTIONS)
    return uvicorn.Config(
        app,
        host=host,
        port=settings.metrics_port,
        http=protocol_class(limits),
        ws="none",
        lifespan="off",
        timeout_keep_alive=settings.http_keep_alive_timeout,
        access_log=False,
        log_config=None,
    )
