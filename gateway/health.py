"""/healthz (the process is alive), /readyz (it can serve: store and database reachable, keys
loaded, not draining), and /metrics when it is not served on a port of its own."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, metrics
from gateway.draining import Draining
from gateway.jsonutil import dumps
from gateway.state.base import StateStore
from gateway.tokens.keys import KeyRing


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def backend_checks(store: StateStore, engine: AsyncEngine, ring: KeyRing) -> dict[str, str]:
    """Can this process serve: store and database answer, keys loaded ("ok" each, or why not)."""
    checks: dict[str, str] = {}
    try:
        await store.ping()
        checks["store"] = "ok"
    except errors.GatewayError:
        checks["store"] = "unavailable"
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # any driver error means "not ready"; the detail goes to the log, not the probe
        checks["database"] = "unavailable"
    checks["keys"] = "ok" if ring.keys else "missing"
    return checks


def readiness(checks: dict[str, str], *, ready: bool) -> Response:
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return Response(dumps(body), status_code=200 if ready else 503, media_type="application/json")


async def metrics_endpoint(request: Request) -> Response:
    payload, content_type = metrics.exposition()
    return Response(payload, media_type=content_type)


def routes(
    store: StateStore, engine: AsyncEngine, keys: Callable[[], KeyRing], draining: Draining, *, with_metrics: bool
) -> list[BaseRoute]:
    async def readyz(request: Request) -> Response:
        checks = await backend_checks(store, engine, keys())
        ready = all(value == "ok" for value in checks.values()) and not draining.started
        checks["draining"] = "yes" if draining.started else "no"
        return readiness(checks, ready=ready)

    found: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    if with_metrics:
        found.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    return found
