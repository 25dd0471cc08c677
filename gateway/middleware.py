"""ASGI middleware: request-body size limit; request ids, access logs and latency metrics."""

from __future__ import annotations

import ipaddress
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import errors, logs, metrics
from gateway.inputs import canonical_address


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


class ForwardedMiddleware:
    """The client's address and scheme behind trusted proxies (instead of the server's own proxy
    headers, which take whatever X-Forwarded-For says). When the peer is one of `trusted` (addresses
    or networks, comma-separated, or `*`), X-Forwarded-For is read from the right: trusted proxies are
    skipped, the first other address is the client. `*` trusts any peer as the one proxy in front and
    takes only the address that proxy appended (the right-most): trusting every hop would let a client
    name itself with an X-Forwarded-For of its own making. A value that is not an IP address ends the walk:
    the client is then the last address known good (the peer, or the proxy that added the junk), so a
    made-up value never gets an address, nor a per-address budget, of its own. Every address is
    written in one spelling (`inputs.canonical_address`): an IPv4-mapped peer as IPv4, IPv6 compressed.
    X-Forwarded-Proto (http or https) from a trusted peer sets the scheme."""

    def __init__(self, app: ASGIApp, trusted: str) -> None:
        self.app = app
        entries = [entry.strip() for entry in trusted.split(",") if entry.strip()]
        self.everyone = "*" in entries
        self.networks = []
        for entry in entries:
            if entry == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue  # a host name or junk in the setting trusts nothing
        self.exact = {str(network.network_address) for network in self.networks if network.num_addresses == 1}

    def _trusts(self, address: str) -> bool:
        if self.everyone or address in self.exact:
            return True
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not scope.get("client"):
            await self.app(scope, receive, send)
            return
        peer, port = scope["client"]
        client = canonical_address(peer) if ":" in peer else peer
        client = client or peer
        if self._trusts(client):
            forwarded: list[bytes] = []
            proto = b""
            for name, value in scope["headers"]:
                if name == b"x-forwarded-for":
                    forwarded.append(value)
                elif name == b"x-forwarded-proto":
                    proto = value
            if forwarded:
                hops = b",".join(forwarded).decode("latin-1").split(",")
                for hop in reversed(hops):
                    address = canonical_address(hop)
                    if address is None:
                        break
                    client = address
                    if self.everyone or not self._trusts(address):
                        break  # with `*`: the hop the trusted peer appended, never one the client wrote
            scheme = proto.decode("latin-1").strip().lower()
            if scheme in ("http", "https"):
                secure = scheme == "https"
                if scope["type"] == "websocket":
                    scope["scheme"] = "wss" if secure else "ws"
                else:
                    scope["scheme"] = scheme
        if client != peer:
            scope["client"] = (client, port)
        await self.app(scope, receive, send)
