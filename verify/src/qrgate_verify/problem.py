"""RFC 9457 problem+json: the error model the gateway and the middleware share, and a tiny responder.

`Problem` is the base of every refusal a client can act on; the gateway's `errors.GatewayError` is
this class, so a problem raised here (a 401 from the middleware) and one raised by the gateway's own
code (a 503 from its key source) render alike. The responder is plain ASGI: no Starlette needed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

PROBLEM_TYPE_BASE = "https://qrgate.dev/problems/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Problem(Exception):
    status: int = 400
    code: str = "invalid_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
            **self.extra,
        }

    def response_headers(self) -> dict[str, str]:
        """The problem's own headers; a 401 always says how to authenticate (RFC 9110 11.6.1)."""
        headers = dict(self.headers)
        if self.status == 401 and "WWW-Authenticate" not in headers:
            headers["WWW-Authenticate"] = "Bearer"
        return headers


class Unauthorized(Problem):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


def problem_json(problem: Problem) -> bytes:
    # Compact and UTF-8, like the gateway's orjson bodies (details may be Chinese).
    return json.dumps(problem.body(), ensure_ascii=False, separators=(",", ":")).encode()


def problem_app(problem: Problem) -> ASGIApp:
    """An ASGI app that answers `problem` as application/problem+json."""
    body = problem_json(problem)
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    headers += [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in problem.response_headers().items()
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": problem.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
