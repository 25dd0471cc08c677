"""Captchas through the real server: the image, single use, case-insensitive answers, the per-IP
limit, and the test-only fixed answer that production refuses."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image
from pydantic import ValidationError

from gateway.settings import Settings
from tests.support.accounts import fresh_ip, login, solved_captcha
from tests.support.gateway_server import CAPTCHA_ANSWER, ThreadedGateway, free_port, make_settings

pytestmark = pytest.mark.anyio
Person = Callable[..., dict[str, str]]


async def test_a_captcha_is_a_png_image_with_an_id_and_a_lifetime(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/captcha", headers=fresh_ip())
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"captcha_id", "image", "expires_in"}
    assert body["expires_in"] == 300
    assert len(body["captcha_id"]) >= 22
    prefix = "data:image/png;base64,"
    assert body["image"].startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(body["image"][len(prefix) :])))
    assert (image.format, image.size) == ("PNG", (160, 60))
    other = (await http.post("/v1/captcha", headers=fresh_ip())).json()
    assert other["captcha_id"] != body["captcha_id"]


async def _locked_in_captcha_state(http: httpx.AsyncClient, make_person: Person) -> dict[str, str]:
    person = make_person()
    first = await login(http, person["phone"], "Wrong-pass1")
    assert first.json()["captcha_required"] is True
    return person


async def test_answers_are_case_insensitive_and_single_use(http: httpx.AsyncClient, make_person: Person) -> None:
    person = await _locked_in_captcha_state(http, make_person)
    captcha = await solved_captcha(http)
    lower = await login(http, person["phone"], person["password"], captcha_id=captcha["captcha_id"],
                        captcha_answer=CAPTCHA_ANSWER.lower())  # fmt: skip
    assert lower.status_code == 200, lower.text
    # The same captcha again: consumed.
    await login(http, person["phone"], "Wrong-pass1")  # captcha required again from here on
    again = await login(http, person["phone"], person["password"], **captcha)
    assert (again.status_code, again.json()["code"]) == (400, "captcha_invalid")


async def test_a_wrong_answer_consumes_the_captcha(http: httpx.AsyncClient, make_person: Person) -> None:
    person = await _locked_in_captcha_state(http, make_person)
    captcha = await solved_captcha(http)
    wrong = await login(
        http, person["phone"], person["password"], captcha_id=captcha["captcha_id"], captcha_answer="NOPE"
    )
    assert (wrong.status_code, wrong.json()["code"]) == (400, "captcha_invalid")
    right_too_late = await login(http, person["phone"], person["password"], **captcha)
    assert (right_too_late.status_code, right_too_late.json()["code"]) == (400, "captcha_invalid")


async def test_unknown_captcha_ids_are_invalid(http: httpx.AsyncClient, make_person: Person) -> None:
    person = await _locked_in_captcha_state(http, make_person)
    response = await login(http, person["phone"], person["password"], captcha_id="x" * 22, captcha_answer="ABCD")
    assert (response.status_code, response.json()["code"]) == (400, "captcha_invalid")


async def test_captchas_per_ip_are_limited(tmp_path: Path) -> None:
    port = free_port()
    server = ThreadedGateway(make_settings(tmp_path, port, captcha_ip_max=3), port).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            ip = fresh_ip()
            statuses = [(await http.post("/v1/captcha", headers=ip)).status_code for _ in range(3)]
            refused = await http.post("/v1/captcha", headers=ip)
            elsewhere = await http.post("/v1/captcha", headers=fresh_ip())
    finally:
        server.stop()
    assert statuses == [201, 201, 201]
    assert (refused.status_code, refused.json()["code"]) == (429, "too_many_requests")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert elsewhere.status_code == 201


def test_production_refuses_a_fixed_captcha_answer() -> None:
    url = "https://sms.invalid/send"
    with pytest.raises(ValidationError, match="CAPTCHA_TEST_ANSWER"):
        Settings(production=True, captcha_test_answer="ABCD", sms_sender="webhook", sms_webhook_url=url)
    secret = "x" * 32
    production = Settings(production=True, sms_sender="webhook", sms_webhook_url=url, unknown_identity_secret=secret)
    assert production.captcha_test_answer == ""
