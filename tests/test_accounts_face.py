"""Registration by face verification: disabled by default with a clear 501, and a real HTTP client
against a fake verification service the test starts (match, mismatch, bad token, outage, timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.accounts.registration import AGREEMENT_VERSION
from tests.conftest import new_identity
from tests.support.accounts import FakeService, SmsCodes, fresh_ip, identity_fields, login, sms_challenge, sms_codes
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

pytestmark = pytest.mark.anyio


class FakeFaceService:
    """Verdicts by face token: "match", "other-person", "expired" (400), "broken" (500), "slow"."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, Any], str]] = []
        self.app = Starlette(routes=[Route("/verify", self.verify, methods=["POST"])])

    async def verify(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append((body, request.headers.get("authorization", "")))
        token = body["face_token"]
        if token == "expired":
            return JSONResponse({"error": "token expired"}, status_code=400)
        if token == "broken":
            return JSONResponse({"error": "internal"}, status_code=500)
        if token == "slow":
            await asyncio.sleep(2)
        return JSONResponse({"verified": token == "match"})


@pytest.fixture(scope="module")
def face_service() -> Iterator[tuple[FakeFaceService, FakeService]]:
    fake = FakeFaceService()
    with FakeService(fake.app) as served:
        yield fake, served


@pytest.fixture(scope="module")
def face_gateway(
    tmp_path_factory: pytest.TempPathFactory, face_service: tuple[FakeFaceService, FakeService]
) -> Iterator[ThreadedGateway]:
    port = free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("face"),
        port,
        face_verification_url=face_service[1].url + "/verify",
        face_verification_client_id="qrgate-test",
        face_verification_secret="face-s3cret",
        face_verification_timeout=0.5,
        face_max_attempts=3,
    )
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


@pytest.fixture
async def http(face_gateway: ThreadedGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=face_gateway.base_url, timeout=20) as client:
        yield client


def face_body(person: dict[str, str], token: str) -> dict[str, str]:
    return {"method": "face", "face_token": token, "agreement_version": AGREEMENT_VERSION, **identity_fields(person)}


async def test_disabled_by_default_with_a_clear_error(gateway: ThreadedGateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url) as http:
        response = await http.post("/v1/registrations", json=face_body(new_identity(), "match"))
    assert response.status_code == 501
    assert response.json()["code"] == "face_verification_disabled"
    assert "QRGATE_FACE_VERIFICATION_URL" in response.json()["detail"]


async def test_a_matching_face_registers_a_resident_id_holder(
    http: httpx.AsyncClient, face_service: tuple[FakeFaceService, FakeService]
) -> None:
    person = new_identity()
    started = await http.post("/v1/registrations", json=face_body(person, "match"), headers=fresh_ip())
    assert started.status_code == 201, started.text
    sent, authorization = face_service[0].requests[-1]
    assert sent == {**identity_fields(person), "face_token": "match"}
    assert authorization.startswith("Basic ")
    with sms_codes() as codes:
        await complete(http, codes, person, started.json())
    assert (await login(http, person["id_number"], person["password"], fresh_ip())).status_code == 200


async def complete(http: httpx.AsyncClient, codes: SmsCodes, person: dict[str, str], started: dict[str, Any]) -> None:
    challenge, sms = await sms_challenge(http, codes, {"purpose": "register", "phone": person["phone"]})
    response = await http.post(
        f"/v1/registrations/{started['registration_id']}/complete",
        json={
            "registration_token": started["registration_token"],
            "login_name": person["login_name"],
            "password": person["password"],
            "phone": person["phone"],
            "sms_challenge_id": challenge,
            "sms_code": sms,
            "household_region": "440305",
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["log_in_with"] == ["phone", "login_name", "id_number"]


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        ("other-person", 403, "face_mismatch"),
        ("expired", 400, "face_token_invalid"),
        ("broken", 503, "face_verification_unavailable"),
        ("slow", 503, "face_verification_unavailable"),
    ],
)
async def test_refusals_and_outages(http: httpx.AsyncClient, token: str, status: int, code: str) -> None:
    response = await http.post("/v1/registrations", json=face_body(new_identity(), token), headers=fresh_ip())
    assert (response.status_code, response.json()["code"]) == (status, code)
    if status == 503:
        assert response.headers["retry-after"]


async def test_resident_id_only(http: httpx.AsyncClient) -> None:
    person = {**new_identity(), "id_type": "passport", "id_number": "E77777777", "nationality": "USA"}
    response = await http.post("/v1/registrations", json=face_body(person, "match"), headers=fresh_ip())
    assert (response.status_code, response.json()["code"]) == (400, "face_verification_resident_id_only")


async def test_attempts_per_identity_are_limited(http: httpx.AsyncClient) -> None:
    person = new_identity()
    statuses = []
    for _ in range(4):
        response = await http.post("/v1/registrations", json=face_body(person, "other-person"), headers=fresh_ip())
        statuses.append(response.status_code)
    assert statuses == [403, 403, 403, 429]
    assert response.json()["code"] == "face_attempts_exceeded"


@pytest.mark.parametrize(
    "extra",
    [
        {"method": "face"},
        {"method": "face", "face_token": "match", "registration_code": "ABCDEF"},
        {"method": "hall_code"},
    ],
)
async def test_each_method_needs_its_own_proof(http: httpx.AsyncClient, extra: dict[str, str]) -> None:
    response = await http.post("/v1/registrations", json={**identity_fields(new_identity()), **extra})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
