"""Password login through the real server: every identifier, the 401 body, lockout, no enumeration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from gateway.tokens.verifier import AccessTokenVerifier, RemoteJwks
from tests.support.accounts import fresh_ip, solved_captcha
from tests.support.gateway_server import ThreadedGateway

pytestmark = pytest.mark.anyio
Person = Callable[..., dict[str, str]]


def login(identifier: str, password: str, client_id: str = "web") -> dict[str, str]:
    return {"identifier": identifier, "password": password, "client_id": client_id}


@pytest.mark.parametrize("which", ["phone", "login_name", "id_number"])
async def test_login_by_each_identifier(
    gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Person, which: str
) -> None:
    person = make_person()
    response = await http.post("/v1/login/password", json=login(person[which], person["password"]))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    jwks = RemoteJwks(f"{gateway.base_url}/.well-known/jwks.json")
    try:
        claims = await AccessTokenVerifier(jwks, issuer=gateway.base_url, audience="qrgate-sso").verify(
            body["access_token"]
        )
    finally:
        await jwks.aclose()
    assert claims["sub"] == person["id"]
    assert claims["amr"] == ["pwd"]
    assert claims["client_id"] == "web"
    assert claims["exp"] - claims["iat"] == 600
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "sid", "amr", "auth_time", "scope"}
    assert claims["scope"] == "sessions units.read units.verify units.manage"  # the web client's (QRGATE_CLIENT_SCOPES)


async def test_wrong_password_answers_like_an_unknown_account(http: httpx.AsyncClient, make_person: Person) -> None:
    person = make_person()
    known = await http.post("/v1/login/password", json=login(person["login_name"], "Wrong-pass1"))
    unknown = await http.post("/v1/login/password", json=login("no_such_person", "Wrong-pass1"))
    for response in (known, unknown):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
    assert known.json() == unknown.json()
    assert known.json()["code"] == "invalid_credentials"
    assert known.json()["attempts_left"] == 4
    assert known.json()["captcha_required"] is True


async def test_fifth_failure_locks_whatever_identifier_is_used(http: httpx.AsyncClient, make_person: Person) -> None:
    person = make_person()
    identifiers = [person["phone"], person["login_name"], person["id_number"], person["phone"]]
    for left, identifier in zip((4, 3, 2, 1), identifiers, strict=True):
        # After the first wrong password every attempt needs a captcha (tests/test_accounts_lockout.py).
        captcha = await solved_captcha(http) if left < 4 else {}
        response = await http.post("/v1/login/password", json={**login(identifier, "Wrong-pass1"), **captcha})
        assert response.json()["attempts_left"] == left
    captcha = await solved_captcha(http)
    fifth = await http.post("/v1/login/password", json={**login(person["login_name"], "Wrong-pass1"), **captcha})
    assert fifth.status_code == 423
    assert fifth.json()["code"] == "account_locked"
    assert 7190 <= fifth.json()["retry_after"] <= 7200
    assert fifth.headers["retry-after"] == str(fifth.json()["retry_after"])
    # Locked: even the right password is refused.
    right = await http.post("/v1/login/password", json=login(person["phone"], person["password"]))
    assert right.status_code == 423


async def test_fifty_parallel_wrong_guesses_count_exactly_five(http: httpx.AsyncClient, make_person: Person) -> None:
    person = make_person()
    ip = fresh_ip()  # 50 attempts at once: keep them off the per-IP budget other tests share
    captchas = [await solved_captcha(http, ip) for _ in range(50)]  # every guess answers its captcha
    answers = await asyncio.gather(
        *(
            http.post(
                "/v1/login/password", json={**login(person["phone"], f"Wrong-pass{i}"), **captchas[i]}, headers=ip
            )
            for i in range(50)
        )
    )
    statuses = [a.status_code for a in answers]
    assert statuses.count(401) == 4
    assert statuses.count(423) == 46
    assert sorted(a.json()["attempts_left"] for a in answers if a.status_code == 401) == [1, 2, 3, 4]


async def test_success_resets_the_count(http: httpx.AsyncClient, make_person: Person) -> None:
    person = make_person()
    await http.post("/v1/login/password", json=login(person["phone"], "Wrong-pass1"))
    right = {**login(person["phone"], person["password"]), **await solved_captcha(http)}
    assert (await http.post("/v1/login/password", json=right)).status_code == 200
    again = await http.post("/v1/login/password", json=login(person["phone"], "Wrong-pass1"))
    assert again.json()["attempts_left"] == 4


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"identifier": "a", "password": "b"}, 400, "invalid_request"),
        ({"identifier": 5, "password": "b", "client_id": "web"}, 400, "invalid_request"),
        ({"identifier": "a", "password": "b", "client_id": "web", "extra": 1}, 400, "invalid_request"),
        ({"identifier": "a", "password": "b", "client_id": "nobody"}, 400, "unknown_client"),
        ({"identifier": "", "password": "b", "client_id": "web"}, 400, "invalid_request"),
    ],
)
async def test_bad_bodies_are_4xx(http: httpx.AsyncClient, body: dict[str, object], status: int, code: str) -> None:
    response = await http.post("/v1/login/password", json=body)
    assert response.status_code == status
    assert response.json()["code"] == code


async def test_malformed_requests(http: httpx.AsyncClient) -> None:
    broken = await http.post("/v1/login/password", content=b"{not json", headers={"content-type": "application/json"})
    assert (broken.status_code, broken.json()["code"]) == (400, "malformed_json")
    array = await http.post("/v1/login/password", json=[1, 2])
    assert array.status_code == 400
    form = await http.post("/v1/login/password", data={"identifier": "x"})
    assert (form.status_code, form.json()["code"]) == (415, "unsupported_media_type")
    huge = await http.post("/v1/login/password", json={"identifier": "x" * 20_000})
    assert (huge.status_code, huge.json()["code"]) == (413, "body_too_large")
    wrong_method = await http.get("/v1/login/password")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"
    nul = await http.post("/v1/login/password", json={"identifier": "a\u0000b", "password": "x", "client_id": "web"})
    assert (nul.status_code, nul.json()["code"]) == (400, "invalid_request")
    nowhere = await http.get("/v1/nothing-here")
    assert (nowhere.status_code, nowhere.json()["code"]) == (404, "not_found")


async def test_streamed_body_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 1024

    response = await http.post("/v1/qr", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_a_small_content_length_does_not_let_a_large_chunked_body_through(gateway: ThreadedGateway) -> None:
    """Content-Length and Transfer-Encoding together: the body is framed by the chunks, so the small
    length announced must not switch the size check off."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        chunk = b"x" * 1024
        body = b"".join(b"400\r\n" + chunk + b"\r\n" for _ in range(40)) + b"0\r\n\r\n"
        head = (
            b"POST /v1/qr HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(head + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    status = int(status_line.split()[1])
    assert status in (400, 413), status_line  # refused by the parser, or by the size limit
