"""/healthz (the process is alive), /readyz (it can serve: store and database reachable, keys
loaded, not draining), and /metrics when it is not served on a port of its own."""

from __future__ import annotations

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import errors, metrics
from gateway.components import gateway_of
from gateway.jsonutil import dumps


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    gw = gateway_of(request)
    checks: dict[str, str] = {}
    try:
        await gw.store.ping()
        checks["store"] = "ok"
    except errors.GatewayError:
        checks["store"] = "unavailable"
    try:
        async with gw.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # any driver error means "not ready"; the detail goes to the log, not the probe
        checks["database"] = "unavailable"
    checks["keys"] = "ok" if gw.issuer.ring.keys else "missing"
    checks["draining"] = "yes" if gw.draining.started else "no"
    ready = checks["store"] == checks["database"] == checks["keys"] == "ok" and not gw.draining.started
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return Response(dumps(body), status_code=200 if ready else 503, media_type="application/json")


async def metrics_endpoint(request: Request) -> Response:
    payload, content_type = metrics.exposition()
    return Response(payload, media_type=content_type)


def routes(*, with_metrics: bool) -> list[BaseRoute]:
    found: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    if with_metrics:
        found.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    return found
