"""SMS codes through the real server: the dev sender's log, the webhook sender against a fake
provider, resend and daily limits, verification attempts, and production's refusal of the dev sender."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.settings import Settings
from tests.support.accounts import FakeService, SmsCodes, fresh_ip, identity_fields, sms_challenge, solved_captcha
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

pytestmark = pytest.mark.anyio
Person = Callable[..., dict[str, str]]


def phone_of(n: int) -> str:
    return f"137{n:08d}"


_phones = iter(range(10_000_000, 99_999_999, 7919))


async def test_the_dev_sender_logs_the_code_marked_dev_only(http: httpx.AsyncClient, codes: SmsCodes) -> None:
    phone = phone_of(next(_phones))
    response = await http.post("/v1/sms/challenges", json={"purpose": "register", "phone": phone}, headers=fresh_ip())
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"challenge_id", "expires_in", "resend_after", "phone_masked"}
    assert (body["expires_in"], body["resend_after"]) == (300, 60)
    assert body["phone_masked"] == phone[:3] + "****" + phone[-4:]
    assert re.fullmatch(r"\d{6}", codes.code_for(body["challenge_id"]))
    message = next(m for m in codes.messages if body["challenge_id"] in m)
    assert "DEV-ONLY" in message
    assert phone not in message  # the log shows the phone masked


async def test_one_sms_per_phone_and_purpose_per_minute(
    http: httpx.AsyncClient, codes: SmsCodes, make_person: Person
) -> None:
    person = make_person()
    first = await http.post("/v1/sms/challenges", json={"purpose": "register", "phone": person["phone"]})
    assert first.status_code == 201
    again = await http.post("/v1/sms/challenges", json={"purpose": "register", "phone": person["phone"]})
    assert (again.status_code, again.json()["code"]) == (429, "sms_too_soon")
    assert 1 <= int(again.headers["retry-after"]) <= 60
    other_purpose = await http.post(
        "/v1/sms/challenges",
        json={"purpose": "reset_password", "identity": identity_fields(person), **await solved_captcha(http)},
    )
    assert other_purpose.status_code == 201
    assert other_purpose.json()["phone_masked"] == person["phone"][:3] + "****" + person["phone"][-4:]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"purpose": "register"}, 400, "invalid_request"),
        ({"purpose": "register", "phone": "12345"}, 400, "invalid_phone"),
        ({"purpose": "register", "phone": "１３９００００００００"}, 400, "invalid_phone"),
        ({"purpose": "reset_password", "phone": "13900000001"}, 400, "invalid_request"),
        ({"purpose": "transfer_money", "phone": "13900000001"}, 400, "invalid_request"),
        (
            {"purpose": "reset_password", "identity": {"id_type": "resident_id", "id_number": "11010519491231002X",
                                                       "name": "无此人"}},
            400,
            "captcha_required",
        ),
        (
            {"purpose": "reset_password", "identity": {"id_type": "resident_id", "id_number": "11010519491231002X",
                                                       "name": "无此人"}, "captcha_id": "nope", "captcha_answer": "X"},
            400,
            "captcha_invalid",
        ),
    ],
)  # fmt: skip
async def test_bad_challenge_requests(http: httpx.AsyncClient, body: dict[str, Any], status: int, code: str) -> None:
    response = await http.post("/v1/sms/challenges", json=body, headers=fresh_ip())
    assert (response.status_code, response.json()["code"]) == (status, code)


async def test_a_reset_code_is_bound_to_the_identity_and_tries_are_limited(
    http: httpx.AsyncClient, codes: SmsCodes, make_person: Person
) -> None:
    person = make_person()
    challenge, code = await sms_challenge(
        http, codes, {"purpose": "reset_password", "identity": identity_fields(person)}
    )
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    forgot = {**identity_fields(person), "sms_challenge_id": challenge}
    stranger = make_person()
    elsewhere = await http.post(
        "/v1/password/forgot", json={**identity_fields(stranger), "sms_challenge_id": challenge, "sms_code": code}
    )
    assert elsewhere.json()["code"] == "sms_code_invalid"  # another person's identity: not this code's
    lefts = []
    for _ in range(5):
        response = await http.post("/v1/password/forgot", json={**forgot, "sms_code": wrong}, headers=fresh_ip())
        assert (response.status_code, response.json()["code"]) == (400, "sms_code_invalid")
        lefts.append(response.json()["attempts_left"])
    assert lefts == [4, 3, 2, 1, 0]
    too_late = await http.post("/v1/password/forgot", json={**forgot, "sms_code": code}, headers=fresh_ip())
    assert (too_late.status_code, too_late.json()["code"]) == (400, "sms_code_invalid")


@pytest.mark.slow  # waits for the next two one-second resend windows
async def test_daily_cap_per_phone(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(tmp_path, port, sms_daily_cap=2, sms_resend_interval=1)
    server = ThreadedGateway(settings, port).start()
    phone = phone_of(next(_phones))
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            statuses = []
            for i in range(3):
                if i:
                    await asyncio.sleep(1.01 - time.time() % 1)  # the next one-second resend window
                response = await http.post("/v1/sms/challenges", json={"purpose": "register", "phone": phone})
                statuses.append(response.status_code)
    finally:
        server.stop()
    assert statuses == [201, 201, 429]
    assert response.json()["code"] == "sms_daily_limit"


class FakeSmsProvider:
    """The provider's webhook: records what it was sent; answers `status`."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], str]] = []
        self.status = 200
        self.app = Starlette(routes=[Route("/send", self.send, methods=["POST"])])

    async def send(self, request: Request) -> JSONResponse:
        self.received.append((await request.json(), request.headers.get("authorization", "")))
        return JSONResponse({"ok": self.status == 200}, status_code=self.status)


async def test_the_webhook_sender_against_a_fake_provider(tmp_path: Path) -> None:
    provider = FakeSmsProvider()
    with FakeService(provider.app) as fake:
        port = free_port()
        settings = make_settings(
            tmp_path, port, sms_sender="webhook", sms_webhook_url=fake.url + "/send", sms_webhook_secret="hook-s3cret"
        )
        server = ThreadedGateway(settings, port).start()
        try:
            person = {"login_name": "hook_user", "phone": "13612345678", "name": "赵六", "id_type": "resident_id",
                      "id_number": "11010519491231002X", "password": "Passw0rd!x"}  # fmt: skip
            server.add_person(**person)
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                body = {"purpose": "reset_password", "identity": identity_fields(person)}
                challenge = await http.post("/v1/sms/challenges", json={**body, **await solved_captcha(http)})
                assert challenge.status_code == 201, challenge.text
                sent, authorization = provider.received[-1]
                assert authorization == "Bearer hook-s3cret"
                assert sent["phone"] == person["phone"]
                assert sent["purpose"] == "reset_password"
                assert sent["code"] in sent["text"]
                forgot = await http.post(
                    "/v1/password/forgot",
                    json={**identity_fields(person), "sms_challenge_id": challenge.json()["challenge_id"],
                          "sms_code": sent["code"]},
                )  # fmt: skip
                assert forgot.status_code == 200, forgot.text
                provider.status = 500
                down = await http.post("/v1/sms/challenges", json={"purpose": "register", "phone": "13612345679"})
                assert (down.status_code, down.json()["code"]) == (503, "sms_unavailable")
                assert down.headers["retry-after"]
                provider.status = 200
                retry = await http.post("/v1/sms/challenges", json={"purpose": "register", "phone": "13612345679"})
                assert retry.status_code == 201  # nothing was sent, so no resend wait
        finally:
            server.stop()


def test_production_refuses_the_dev_sender() -> None:
    with pytest.raises(ValidationError, match="dev SMS sender"):
        Settings(production=True)
    with pytest.raises(ValidationError, match="SMS_WEBHOOK_URL"):
        Settings(sms_sender="webhook")


def test_production_needs_one_unknown_identity_secret_for_every_process() -> None:
    """A random secret per process would give an unknown identity a different made-up phone hint on
    each replica (and after each restart), which a registered identity never has."""
    url = "https://sms.invalid/send"
    with pytest.raises(ValidationError, match="QRGATE_UNKNOWN_IDENTITY_SECRET"):
        Settings(production=True, sms_sender="webhook", sms_webhook_url=url)
    with pytest.raises(ValidationError, match="QRGATE_UNKNOWN_IDENTITY_SECRET"):
        Settings(production=True, sms_sender="webhook", sms_webhook_url=url, unknown_identity_secret="too-short")
    secret = "s" * 32
    assert Settings(
        production=True, sms_sender="webhook", sms_webhook_url=url, unknown_identity_secret=secret
    ).production


@pytest.mark.slow  # a `qrgate serve` subprocess
def test_qrgate_serve_in_production_refuses_the_dev_sender(tmp_path: Path) -> None:
    env = {**os.environ, "QRGATE_PRODUCTION": "true", "QRGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"}
    served = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert served.returncode == 2
    assert "dev SMS sender" in served.stderr


async def test_a_reset_code_for_an_unknown_identity_reads_like_one_for_a_registered_one(
    http: httpx.AsyncClient, codes: SmsCodes, make_person: Person
) -> None:
    """Issue 15, item 8: the forgotten-password SMS needs a captcha, and does not tell a registered
    identity from an unknown one: the same 201 shape, a made-up but stable masked phone, no SMS, and
    a code that always fails like a wrong one."""
    person = make_person()
    unknown = {**identity_fields(person), "name": "王不存在"}  # the same ID number, another name: no account
    bare = await http.post("/v1/sms/challenges", json={"purpose": "reset_password", "identity": unknown})
    assert (bare.status_code, bare.json()["code"]) == (400, "captcha_required")

    known = await http.post(
        "/v1/sms/challenges",
        json={"purpose": "reset_password", "identity": identity_fields(person), **await solved_captcha(http)},
        headers=fresh_ip(),
    )
    sent_before = len(codes.codes)
    first = await http.post(
        "/v1/sms/challenges",
        json={"purpose": "reset_password", "identity": unknown, **await solved_captcha(http)},
        headers=fresh_ip(),
    )
    assert (known.status_code, first.status_code) == (201, 201), first.text
    assert set(first.json()) == set(known.json()) == {"challenge_id", "expires_in", "resend_after", "phone_masked"}
    assert first.json()["expires_in"] == known.json()["expires_in"]
    assert first.json()["resend_after"] == known.json()["resend_after"]
    masked = first.json()["phone_masked"]
    assert re.fullmatch(r"1[3-9][0-9]\*{4}[0-9]{4}", masked), masked
    assert masked != known.json()["phone_masked"]
    await asyncio.sleep(0.2)
    assert len(codes.codes) == sent_before  # no SMS went anywhere
    assert first.json()["challenge_id"] not in codes.codes

    # Asking again too soon is refused as for a real phone; after the interval, the same hint.
    again = await http.post(
        "/v1/sms/challenges",
        json={"purpose": "reset_password", "identity": unknown, **await solved_captcha(http)},
        headers=fresh_ip(),
    )
    assert (again.status_code, again.json()["code"]) == (429, "sms_too_soon")
    # Any code for it fails as a wrong code does, with the same countdown of tries.
    forgot = {**unknown, "sms_challenge_id": first.json()["challenge_id"]}
    answers = [
        await http.post("/v1/password/forgot", json={**forgot, "sms_code": f"{n:06d}"}, headers=fresh_ip())
        for n in range(5)
    ]
    assert [a.json()["code"] for a in answers] == ["sms_code_invalid"] * 5
    assert [a.json()["attempts_left"] for a in answers] == [4, 3, 2, 1, 0]


async def test_the_unknown_identity_hint_is_the_same_every_time(tmp_path: Path) -> None:
    """Two gateways sharing the secret (as processes behind one balancer do) show the same hint."""
    hints = []
    for run in range(2):
        (tmp_path / str(run)).mkdir()
        port = free_port()
        settings = make_settings(
            (tmp_path / str(run)), port, unknown_identity_secret="hint-s3cret", sms_resend_interval=1
        )
        server = ThreadedGateway(settings, port).start()
        try:
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                body = {"purpose": "reset_password", "identity": {"id_type": "resident_id",
                        "id_number": "11010519491231002X", "name": "无此人"}}  # fmt: skip
                answer = await client.post("/v1/sms/challenges", json={**body, **await solved_captcha(client)})
                assert answer.status_code == 201, answer.text
                hints.append(answer.json()["phone_masked"])
        finally:
            server.stop()
    assert hints[0] == hints[1]
