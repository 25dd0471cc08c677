"""Structured logs: one JSON object per line, for each request and each login event.

What is never logged: passwords, tokens (access, refresh, waiter), captcha answers, SMS codes,
query strings, and full ID numbers or phone numbers (use `mask`). Request ids come from
`X-Request-ID` when a proxy set a sane one, else are made here, and are echoed in the response.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

from gateway.jsonutil import dumps

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
events = logging.getLogger("qrgate.events")
access = logging.getLogger("qrgate.access")
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_") and key != "color_message":
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return dumps(entry).decode()


def configure(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def mask(value: str, keep_start: int = 3, keep_end: int = 4) -> str:
    """13912345678 -> 139****5678; an ID number keeps less than its birth date's worth."""
    if len(value) <= keep_start + keep_end:
        return "*" * len(value)
    return value[:keep_start] + "*" * (len(value) - keep_start - keep_end) + value[-keep_end:]


def event(kind: str, **fields: Any) -> None:
    """A login, lockout or session event, as one structured line."""
    events.info(kind, extra={"event": kind, **fields})


def request_line(method: str, route: str, status: int, started: float, client: str) -> None:
    access.info(
        "request",
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "client": client,
        },
    )
