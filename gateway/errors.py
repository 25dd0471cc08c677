"""Errors named by cause, mapped once to RFC 9457 problem+json.

    GatewayError                       any refusal the client can act on (4xx) or retry (503);
                                       it is qrgate_verify.problem.Problem, as is Unauthorized
    ├── BadRequest (400)               malformed JSON, wrong types, missing fields: `invalid_request`
    │   └── UnknownClient (400)        `unknown_client`
    ├── Unauthorized (401)             missing or invalid bearer / waiter token
    │   └── InvalidCredentials (401)   wrong password, with `attempts_left`
    ├── Forbidden (403)                `client_not_allowed`, `not_scanner`
    ├── NotFound (404)                 `qr_not_found`, `not_found`
    ├── Conflict (409)                 `qr_already_scanned`, `qr_wrong_state`, `already_delivered`
    ├── Gone (410)                     `qr_expired`
    ├── PayloadTooLarge (413)          `body_too_large`
    ├── UnsupportedMediaType (415)     `unsupported_media_type`
    ├── Locked (423)                   `account_locked`, with `retry_after`
    └── ServiceUnavailable (503)       `store_unavailable`, `database_unavailable`, with Retry-After

Handlers raise; `problem_response` renders. Nothing else writes error bodies but qrgate_verify's
middleware, which renders its refusals (this same class) with the same fields.
"""

from __future__ import annotations

from starlette.responses import Response

from gateway.jsonutil import dumps

# The base class and the 401 live in qrgate_verify, so that a refusal raised by its middleware (a bad
# token) and one raised here (the units service's 503 when the gateway's keys cannot be fetched) are
# the same kind of error, caught by the same handlers and rendered alike.
from qrgate_verify.problem import PROBLEM_TYPE_BASE as PROBLEM_TYPE_BASE
from qrgate_verify.problem import Problem
from qrgate_verify.problem import Unauthorized as Unauthorized

GatewayError = Problem


class BadRequest(GatewayError):
    pass


class UnknownClient(BadRequest):
    code = "unknown_client"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    title = "Not found"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class Conflict(GatewayError):
    status = 409
    code = "conflict"
    title = "Conflict"


class Gone(GatewayError):
    status = 410
    code = "gone"
    title = "Gone"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "body_too_large"
    title = "Request body too large"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class Locked(GatewayError):
    status = 423
    code = "account_locked"
    title = "Locked"


class TooManyRequests(GatewayError):
    status = 429
    code = "too_many_requests"
    title = "Too many requests"


class InternalError(GatewayError):
    status = 500
    code = "internal_error"
    title = "Internal error"


class ServiceUnavailable(GatewayError):
    status = 503
    code = "service_unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, code: str | None = None, retry_after: int = 2) -> None:
        super().__init__(detail, code=code, headers={"Retry-After": str(retry_after)})


# The OAuth endpoints: their errors (which carry RFC 6749's `error`) are the same problem body served
# as application/json, as RFC 6749 5.2 requires; relying-party libraries read a token request's error
# only from that media type.
OAUTH_PATHS = frozenset({"/v1/token", "/v1/revoke", "/v1/introspect", "/par"})


def problem_response(error: GatewayError, *, path: str = "") -> Response:
    oauth = path in OAUTH_PATHS and "error" in error.extra
    return Response(
        dumps(error.body()),
        status_code=error.status,
        headers=error.response_headers(),
        media_type="application/json" if oauth else "application/problem+json",
    )
