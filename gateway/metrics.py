"""Prometheus metrics, one set per process (the prometheus_client idiom: module-level metrics in the
default registry). Names start with `qrgate_`; labels are small closed sets, never ids."""

from __future__ import annotations

import functools
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

WAITING_WEBSOCKETS = Gauge("qrgate_waiting_websockets", "Desktop WebSockets waiting for their QR's events.")
QR_EVENTS = Counter(
    "qrgate_qr_events_total",
    "QR lifecycle events: mint, scan, confirm, cancel, abandon, deliver, expire (seen by a waiter); "
    "refused_address, refused_capacity (a mint refused by the live-code caps).",
    ["event"],
)
PASSWORD_LOGINS = Counter(
    "qrgate_password_logins_total",
    "Password logins by outcome: success, invalid, locked, captcha_required, captcha_invalid, throttled, "
    "change_required (a hall temporary password, to be changed first).",
    ["outcome"],
)
LOCKOUTS = Counter("qrgate_lockouts_total", "Subjects locked after too many wrong secrets.", ["scope"])
TOKENS_ISSUED = Counter("qrgate_tokens_issued_total", "Access tokens issued, by grant.", ["grant"])
REFRESHES = Counter("qrgate_refreshes_total", "Refresh-token grants by outcome: rotated, reused, invalid.", ["outcome"])
BACKCHANNEL_LOGOUTS = Counter(
    "qrgate_backchannel_logouts_total",
    "Back-channel logout tokens by outcome: delivered, refused (4xx), failed (given up after the retries), "
    "dropped (the queue was full).",
    ["outcome"],
)
PUSH_LATENCY = Histogram(
    "qrgate_confirm_to_push_seconds",
    "From the phone's confirm to the desktop's `confirmed` message being sent.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REQUEST_LATENCY = Histogram(
    "qrgate_http_request_duration_seconds",
    "HTTP request latency by route template, method and status class (499: the client hung up before its "
    "request was read; not an error of ours).",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0),
)
BACKEND_ERRORS = Counter(
    "qrgate_backend_errors_total", "Errors reaching a backend: store (Redis) or database.", ["backend"]
)

CAPTCHA_FAILURES = Counter(
    "qrgate_captcha_failures_total",
    "Captcha refusals by scope (login, unit, sms-reset, ...) and reason: required (none sent where one was due), "
    "invalid (wrong, used or expired).",
    ["scope", "reason"],
)
UNLOCKS = Counter(
    "qrgate_unlocks_total",
    "Locked subjects unlocked by a reset, by scope (login: a person; unit: a declaration password) and how "
    "(forgotten_password, hall, unit_officer, cli, demo).",
    ["scope", "how"],
)
PASSWORD_RESETS = Counter(
    "qrgate_password_resets_total",
    "Passwords set anew, by scope (login: a person's; unit: a declaration password) and how "
    "(forgotten_password, hall, unit_officer, cli, demo).",
    ["scope", "how"],
)
HTTP_REFUSALS = Counter(
    "qrgate_http_refusals_total",
    "Requests and connections the HTTP server refused before the application: headers_too_large (431), "
    "header_timeout and body_timeout (408, or closed), too_many_connections (503), malformed_request (400).",
    ["reason"],
)


@functools.cache
def labelled(metric: M, *values: str) -> M:
    """`metric.labels(*values)`, looked up once per label set (labels are small closed sets here;
    `labels()` takes a lock and validates on every call)."""
    return metric.labels(*values)


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
