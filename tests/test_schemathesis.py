"""Property-based conformance of the live gateway to protocols/openapi.yaml (schemathesis).

Every operation gets generated requests (examples, coverage and fuzzing phases; positive and
negative data; the OAuth endpoints' form bodies too), at most MAX_EXAMPLES fuzzed ones each. Every
answer must be documented (status code, content type, required headers, body schema) and none may be
a 5xx. Of the cases of the QR operations, a third go out as schemathesis made them (random ids,
random or no credentials), a third with real credentials (a mobile-app access token, or a desktop's
waiter token), and a third are pointed at a freshly minted QR code in a chosen state, so the 2xx
branches, their bodies, and the state-dependent 409s are exercised too. The token and session
operations get the same three turns: as generated; with real credentials (the phone's or a fresh
desktop session's access token, a confidential client's HTTP Basic credentials); and with a real
session in the body or path (a refresh token to refresh, an access token to exchange or introspect,
a sid to end).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import HealthCheck
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import new_identity
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings
from tests.support.schemas import jwt_parts

SPEC = Path(__file__).resolve().parents[1] / "protocols" / "openapi.yaml"
MAX_EXAMPLES = 25
CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
DESKTOP = "withholding-desktop"
SERVICE = ("fuzz-service", "fuzz-" + "s" * 40)  # a confidential client of the fuzzed gateway
CLIENT_AUTH_FIELDS = {"client_id", "client_secret", "client_assertion", "client_assertion_type"}
SESSION_PATHS = {"/v1/token", "/v1/revoke", "/v1/introspect", "/v1/logout", "/v1/sessions", "/v1/sessions/{sid}"}


class RealFlows:
    """Real QR codes and a real mobile-app person, so that generated cases reach the 2xx paths too."""

    STATES = ("pending", "scanned", "confirmed", "delivered", "cancelled")

    def __init__(self, gateway: ThreadedGateway) -> None:
        self.client = httpx.Client(base_url=gateway.base_url, timeout=10)
        person = new_identity()
        gateway.add_person(**person)
        login = {"identifier": person["login_name"], "password": person["password"], "client_id": "mobile-app"}
        response = self.client.post("/v1/login/password", json=login)
        response.raise_for_status()
        self.phone = self.bearer(response.json()["access_token"])
        self._turns = itertools.count()
        self._states = itertools.cycle(self.STATES)
        self._kinds = itertools.cycle(("refresh_token", "access_token"))

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def next_turn(self) -> int:
        return next(self._turns) % 3

    def next_state(self) -> str:
        return next(self._states)

    def next_kind(self) -> str:
        """refresh_token or access_token, in turn."""
        return next(self._kinds)

    def mint(self, state: str = "pending") -> tuple[str, dict[str, str]]:
        """A new QR code, driven to `state`: its id and the desktop's waiter-token header."""
        minted = self.client.post("/v1/qr", json={"client_id": "withholding-desktop", "device_name": "fuzz"})
        minted.raise_for_status()
        qr_id, waiter = minted.json()["qr_id"], self.bearer(minted.json()["waiter_token"])
        steps = self.STATES.index(state)
        if steps >= 1:
            self.client.post(f"/v1/qr/{qr_id}/scan", headers=self.phone).raise_for_status()
        if state == "cancelled":
            self.client.post(f"/v1/qr/{qr_id}/cancel", headers=self.phone).raise_for_status()
        elif steps >= 2:
            self.client.post(f"/v1/qr/{qr_id}/confirm", headers=self.phone).raise_for_status()
        if state == "delivered":
            self.client.get(f"/v1/qr/{qr_id}/state", headers=waiter).raise_for_status()
        return qr_id, waiter

    def desktop_session(self) -> dict[str, Any]:
        """A fresh desktop session (a QR login the phone confirmed): its token response."""
        qr_id, waiter = self.mint("confirmed")
        answer = self.client.get(f"/v1/qr/{qr_id}/state", headers=waiter)
        answer.raise_for_status()
        token: dict[str, Any] = answer.json()["token"]
        return token

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    """A gateway of its own, configured like the session's `gateway` plus one confidential client
    (allowed to introspect and exchange): the fuzzer spends the per-IP budgets (login and captcha
    throttles, lockouts) of the server it hits, and the tests sharing the session gateway must not find
    them spent."""
    port = free_port()
    service = {
        SERVICE[0]: {
            "secret_sha256": hashlib.sha256(SERVICE[1].encode()).hexdigest(),
            "may_introspect": True,
            "may_exchange": True,
        }
    }
    settings = make_settings(tmp_path_factory.mktemp("fuzzed"), port, confidential_clients=service)
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def real(fuzzed: ThreadedGateway) -> Iterator[RealFlows]:
    flows = RealFlows(fuzzed)
    yield flows
    flows.close()


# Loaded eagerly: `schemathesis.pytest.from_fixture` (the lazy loader) fails under pytest 9
# (it reads `Function._nodeid`, which pytest 9 no longer has). The server's address is given per call.
schema = schemathesis.openapi.from_path(SPEC)
schema.config.update(suppress_health_check=[HealthCheck.too_slow])
schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")


def credentials_for(case: schemathesis.Case[Any], real: RealFlows, *, real_qr: bool) -> dict[str, str]:
    """Real credentials for a QR case (the phone's access token, or a desktop's waiter token), and,
    with `real_qr`, a live QR code in the path, in a state that reaches this operation's 2xx answer
    or (in turn) one of its 4xx answers. Returns the headers to send."""
    path, method = case.operation.path, case.method.upper()
    if path.endswith(("/scan", "/confirm", "/cancel")):
        if real_qr:
            qr_id, _ = real.mint("pending" if path.endswith("/scan") else "scanned")
            case.path_parameters = {"qr_id": qr_id}
        return real.phone
    if method == "DELETE" or path.endswith("/state"):
        qr_id, waiter = real.mint(real.next_state() if real_qr else "pending")
        if real_qr:
            case.path_parameters = {"qr_id": qr_id}
            case.query = {"wait": 0.2}  # a real QR code can make the poll wait: keep it short
        return waiter
    if real_qr:  # the images
        qr_id, _ = real.mint()
        case.path_parameters = {"qr_id": qr_id}
    return {}


def basic(client: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(":".join(client).encode()).decode()}


def session_credentials_for(case: schemathesis.Case[Any], real: RealFlows, *, real_session: bool) -> dict[str, str]:
    """Real credentials for a token or session case (returns the headers to send), and, with
    `real_session`, a live session in the form or the path, so the 2xx answers are reached."""
    path = case.operation.path
    generated = case.body if isinstance(case.body, dict) else {}
    form = case.media_type == "application/x-www-form-urlencoded" and isinstance(case.body, dict)
    if path == "/v1/introspect":
        if real_session and form:
            case.body = {**generated, "token": real.desktop_session()[real.next_kind()]}
        return basic(SERVICE)
    if path in ("/v1/token", "/v1/revoke"):
        if not (real_session and form):
            return {}
        desktop = real.desktop_session()
        fuzz = {key: value for key, value in generated.items() if key not in CLIENT_AUTH_FIELDS}
        if path == "/v1/revoke":
            case.body = {**fuzz, "token": desktop[real.next_kind()]}
        elif real.next_kind() == "refresh_token":
            case.body = {**fuzz, "grant_type": "refresh_token", "refresh_token": desktop["refresh_token"]}
            case.body["client_id"] = DESKTOP
        else:  # an exchange for the default audience, all of its scopes
            case.body = {
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": desktop["access_token"],
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "audience": "units",
                "client_id": DESKTOP,
            }
        case.headers.pop("Authorization", None)  # a generated Basic header would make it a service's request
        return {}
    if path == "/v1/sessions/{sid}":
        if real_session:
            case.path_parameters = {"sid": jwt_parts(real.desktop_session()["access_token"])[1]["sid"]}
        return real.phone  # the phone signs out one of its person's desktops (or, generated, none)
    if path == "/v1/logout":  # never the phone's own session: the other cases need it
        return real.bearer(real.desktop_session()["access_token"])
    return real.phone if real_session else real.bearer(real.desktop_session()["access_token"])


@pytest.mark.slow  # about 30 s of generated requests
@schema.parametrize()
def test_gateway_conforms_to_openapi(case: schemathesis.Case[Any], fuzzed: ThreadedGateway, real: RealFlows) -> None:
    headers: dict[str, str] = {}
    if case.operation.path.startswith("/v1/qr/"):
        turn = real.next_turn()  # 0: as generated; 1: real credentials; 2: real credentials and QR code
        if turn:
            headers = credentials_for(case, real, real_qr=turn == 2)
    elif case.operation.path in SESSION_PATHS:
        turn = real.next_turn()  # 0: as generated; 1: real credentials; 2: and a real session to act on
        if turn:
            headers = session_credentials_for(case, real, real_session=turn == 2)
    checks = CHECKS
    if case.operation.path == "/v1/session-ends":
        quick_long_poll(case)
        # Its 200 is a compact JWS (application/jwt), which schemathesis reads as JSON: the page's claims
        # are held against session-ends-claims.json by tests/test_verify_session_ends.py instead.
        checks = [check for check in CHECKS if check is not response_schema_conformance]
    case.call_and_validate(base_url=fuzzed.base_url, headers=headers, checks=checks, timeout=35)


def quick_long_poll(case: schemathesis.Case[Any]) -> None:
    """A valid `wait` on the session-end feed waits it out when no session ends: keep it short (a
    generated invalid one stays, for its 400)."""
    query = case.query if isinstance(case.query, dict) else {}
    try:
        valid = 0 < float(query.get("wait", 0)) <= 30
    except (TypeError, ValueError):
        valid = False
    if valid:
        case.query = {**query, "wait": 0.2}


STATE = "/v1/qr/{qr_id}/state"
GOOD_VIEW = {"state": "scanned", "expires_in": 9, "scanner": {"display_name": "张*"}}
BAD_VIEWS = [
    {"state": "scanned", "expires_in": 9, "scanner": {"display_name": 5}},  # scanner.json
    {
        "state": "confirmed",
        "expires_in": 9,
        "token": {"access_token": "a.b.c", "token_type": "Bearer"},
    },  # token-response.json
    {"state": "delivered", "expires_in": 9, "surprise": True},  # state-view.json
]


def offline_response(body: object) -> schemathesis.Response:
    request = requests.Request("GET", f"http://127.0.0.1/v1/qr/{'A' * 22}/state").prepare()
    return schemathesis.Response(
        200, {"content-type": ["application/json"]}, json.dumps(body).encode(), request, 0.0, True
    )


@pytest.mark.parametrize("body", BAD_VIEWS)
def test_schemathesis_sees_through_the_schema_file_references(body: object) -> None:
    """openapi.yaml refers to ./schemas/*.json, which refer to each other: schemathesis resolves
    both levels, so a body breaking a nested schema fails the conformance check (no silent pass)."""
    case = schema[STATE]["GET"].Case(path_parameters={"qr_id": "A" * 22})
    case.validate_response(offline_response(GOOD_VIEW), checks=[response_schema_conformance])
    with pytest.raises(FailureGroup):
        case.validate_response(offline_response(body), checks=[response_schema_conformance])
