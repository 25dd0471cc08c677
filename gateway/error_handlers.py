"""How every Starlette app of ours (the gateway, the units service) answers what it raised:
problem+json always (errors.py), with the backends' outages counted and logged once, here."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from gateway import errors, metrics
from gateway.directory.persons import DatabaseUnavailable

log = logging.getLogger("qrgate")


BACKEND_OF_CODE = {"store_unavailable": "store", "database_unavailable": "database"}


async def on_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.GatewayError)
    backend = BACKEND_OF_CODE.get(exc.code)
    if backend is not None:
        metrics.labelled(metrics.BACKEND_ERRORS, backend).inc()
        log.warning("backend unavailable", extra={"backend": backend, "path": request.url.path})
    return errors.problem_response(exc, path=request.url.path)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = dict(exc.headers or {})
        return errors.problem_response(
            errors.MethodNotAllowed(f"{request.method} is not allowed here.", headers=allowed)
        )
    if exc.status_code == 404:
        return errors.problem_response(errors.NotFound(f"No such resource: {request.url.path}"))
    return errors.problem_response(errors.BadRequest(str(exc.detail), status=exc.status_code))


async def on_database_error(request: Request, exc: Exception) -> Response:
    """Any driver error that reaches here means the database is unreachable or failing: 503, and
    the pool reconnects by itself (pre-ping) when it is back. Integrity errors are bugs: 500."""
    if isinstance(exc, IntegrityError):
        return await on_unexpected(request, exc)
    metrics.labelled(metrics.BACKEND_ERRORS, "database").inc()
    log.warning("database unavailable: %s", exc.__class__.__name__, extra={"path": request.url.path})
    return errors.problem_response(DatabaseUnavailable("The directory database is unavailable."))


CLIENT_CLOSED_REQUEST = 499  # nginx's name for it: no answer was possible, and no error of ours


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client hung up before its request was read (half a body, then gone): no traceback and no
    5xx, one access-log line with 499 (408 when the server closed it for being too slow, serving.py).
    The response goes nowhere; it only tells the access log and the metrics what happened."""
    status = 408 if request.scope.get("qrgate.timed_out") else CLIENT_CLOSED_REQUEST
    return Response(status_code=status)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return errors.problem_response(errors.InternalError("An internal error occurred; it has been logged."))


def exception_handlers() -> Mapping[Any, ExceptionHandler]:
    return {
        errors.GatewayError: on_gateway_error,
        HTTPException: on_http_exception,
        DBAPIError: on_database_error,  # the database failing in any way: 503, and it reconnects by itself
        SQLAlchemyTimeoutError: on_database_error,
        ClientDisconnect: on_client_disconnect,
        Exception: on_unexpected,
    }
