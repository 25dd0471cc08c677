"""Property-based conformance of the live gateway to protocols/openapi.yaml (schemathesis).

Every operation gets generated requests (examples, coverage and fuzzing phases; positive and
negative data), at most MAX_EXAMPLES fuzzed ones each. Every answer must be documented (status code,
content type, required headers, body schema) and none may be a 5xx. Of the cases of the QR
operations, a third go out as schemathesis made them (random ids, random or no credentials), a third
with real credentials (a mobile-app access token, or a desktop's waiter token), and a third are
pointed at a freshly minted QR code in a chosen state, so the 2xx branches, their bodies, and the
state-dependent 409s are exercised too.
"""

from __future__ import annotations

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

SPEC = Path(__file__).resolve().parents[1] / "protocols" / "openapi.yaml"
MAX_EXAMPLES = 25
CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


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

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def next_turn(self) -> int:
        return next(self._turns) % 3

    def next_state(self) -> str:
        return next(self._states)

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

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    """A gateway of its own, configured like the session's `gateway`: the fuzzer spends the per-IP
    budgets (login and captcha throttles, lockouts) of the server it hits, and the tests sharing the
    session gateway must not find them spent."""
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path_factory.mktemp("fuzzed"), port), port).start()
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


@schema.parametrize()
def test_gateway_conforms_to_openapi(case: schemathesis.Case[Any], fuzzed: ThreadedGateway, real: RealFlows) -> None:
    headers: dict[str, str] = {}
    if case.operation.path.startswith("/v1/qr/"):
        turn = real.next_turn()  # 0: as generated; 1: real credentials; 2: real credentials and QR code
        if turn:
            headers = credentials_for(case, real, real_qr=turn == 2)
    case.call_and_validate(base_url=fuzzed.base_url, headers=headers, checks=CHECKS, timeout=35)


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
