"""The session-end feed (`GET /v1/session-ends`, gateway/tokens/session_ends.py) and its follower in
the verifier package (`qrgate_verify.SessionEnds`), against a real gateway on a real port: the page is
signed and holds to its schema; a fresh check sees an end the follower has not yet; the follower
delivers an end within the promise; when the gateway cannot be reached a state-changing check fails
closed once the view is older than `max_staleness`; a page signed by another key is not believed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.settings import Settings
from gateway.tokens import jws
from gateway.tokens.keys import KeyFile
from qrgate_verify import RemoteJwks, SessionEnded, SessionEnds, SessionStatusUnavailable
from qrgate_verify.session_ends import sid_hash
from tests.support.accounts import access_token, bearer
from tests.support.gateway_server import AppServer, ThreadedGateway, free_port
from tests.support.schemas import assert_valid, jwt_parts
from tests.support.units import claims_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def follower(gateway: ThreadedGateway) -> AsyncIterator[Callable[..., SessionEnds]]:
    made: list[SessionEnds] = []
    jwks = RemoteJwks(gateway.base_url + "/.well-known/jwks.json")

    def make(
        url: str = gateway.base_url + "/v1/session-ends", *, wait: float = 20.0, max_staleness: float = 5.0
    ) -> SessionEnds:
        ends = SessionEnds(url, jwks, issuer=gateway.base_url, wait=wait, max_staleness=max_staleness)
        made.append(ends)
        return ends

    yield make
    for ends in made:
        await ends.aclose()
    await jwks.aclose()


async def test_the_page_is_signed_and_holds_to_its_schema(
    gateway: ThreadedGateway, http: httpx.AsyncClient, make_person: Callable[..., dict[str, str]]
) -> None:
    token = await access_token(http, make_person())
    first = await http.get("/v1/session-ends")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/jwt"
    assert first.headers["cache-control"] == "no-store"
    cursor = jwt_parts(first.text)[1]["cursor"]
    assert (await http.post("/v1/logout", headers=bearer(token))).status_code == 204
    page = await http.get("/v1/session-ends", params={"after": cursor})
    header, claims = jwt_parts(page.text)
    assert header["typ"] == "session-ends+jwt"
    kids = {key["kid"] for key in (await http.get("/.well-known/jwks.json")).json()["keys"]}
    assert header["kid"] in kids
    assert_valid("session-ends-claims.json", claims)
    assert claims["iss"] == gateway.base_url
    assert claims["after"] == cursor
    hashed = sid_hash(claims_of(token)["sid"])
    assert hashed in [end["sid"] for end in claims["ends"]]
    assert claims_of(token)["sid"] not in page.text  # only the hash is published
    until = next(end["until"] for end in claims["ends"] if end["sid"] == hashed)
    assert abs(until - (time.time() + gateway.settings.access_token_ttl + 60)) < 10


async def test_a_long_poll_answers_when_a_session_ends(
    http: httpx.AsyncClient, make_person: Callable[..., dict[str, str]]
) -> None:
    token = await access_token(http, make_person())
    cursor = jwt_parts((await http.get("/v1/session-ends")).text)[1]["cursor"]
    started = time.monotonic()
    waiting = asyncio.create_task(http.get("/v1/session-ends", params={"after": cursor, "wait": "10"}))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    assert (await http.post("/v1/logout", headers=bearer(token))).status_code == 204
    answer = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 3
    assert len(jwt_parts(answer.text)[1]["ends"]) >= 1


async def test_bad_cursors_and_waits_are_refused(http: httpx.AsyncClient) -> None:
    for params in ({"after": "x"}, {"after": "1-2-3"}, {"wait": "31"}, {"wait": "-1"}, {"wait": "soon"}):
        answer = await http.get("/v1/session-ends", params=params)
        assert answer.status_code == 400, params
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "invalid_request"


async def test_a_fresh_check_sees_an_end_the_view_has_not(
    http: httpx.AsyncClient, make_person: Callable[..., dict[str, str]], follower: Callable[..., SessionEnds]
) -> None:
    ends = follower()  # not started: no long-poll, only what a check fetches
    ended_token, live_token = await access_token(http, make_person()), await access_token(http, make_person())
    ended_sid, live_sid = claims_of(ended_token)["sid"], claims_of(live_token)["sid"]
    await ends.check(ended_sid, fresh=True)  # alive so far
    assert (await http.post("/v1/logout", headers=bearer(ended_token))).status_code == 204
    await ends.check(ended_sid)  # the view has not heard of it yet
    assert not ends.ended(ended_sid)
    with pytest.raises(SessionEnded) as refused:
        await ends.check(ended_sid, fresh=True)
    assert refused.value.status == 401
    assert refused.value.code == "session_ended"
    assert ends.ended(ended_sid)
    await ends.check(live_sid, fresh=True)  # another session lives on
    # Many callers at once share the fetches: all answer alike.
    results = await asyncio.gather(*(ends.check(live_sid, fresh=True) for _ in range(50)))
    assert results == [None] * 50


async def test_the_follower_hears_of_an_end_within_5_s(
    http: httpx.AsyncClient, make_person: Callable[..., dict[str, str]], follower: Callable[..., SessionEnds]
) -> None:
    ends = follower(wait=10.0)
    await ends.start()
    deadline = time.monotonic() + 10
    while ends.staleness > 1.0:  # the first answer
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    token = await access_token(http, make_person())
    sid = claims_of(token)["sid"]
    assert not ends.ended(sid)
    assert (await http.post("/v1/logout", headers=bearer(token))).status_code == 204
    started = time.monotonic()
    while not ends.ended(sid):
        assert time.monotonic() - started < 5.0, "the follower did not hear of the end within 5 s"
        await asyncio.sleep(0.02)
    with pytest.raises(SessionEnded):
        await ends.check(sid)


async def test_an_unreachable_gateway_fails_closed_after_max_staleness(
    http: httpx.AsyncClient, make_person: Callable[..., dict[str, str]], follower: Callable[..., SessionEnds]
) -> None:
    sid = claims_of(await access_token(http, make_person()))["sid"]
    never = follower(f"http://127.0.0.1:{free_port()}/v1/session-ends", max_staleness=1.0)
    await never.check(sid)  # reads answer from the view, whatever the feed's state
    with pytest.raises(SessionStatusUnavailable) as unavailable:
        await never.check(sid, fresh=True)  # never heard from the gateway: closed
    assert unavailable.value.status == 503
    assert unavailable.value.code == "session_status_unavailable"
    assert unavailable.value.response_headers()["Retry-After"] == "2"

    ends = follower(max_staleness=1.0)
    await ends.check(sid, fresh=True)  # confirmed now
    ends.url = f"http://127.0.0.1:{free_port()}/v1/session-ends"  # the gateway is gone
    await ends.check(sid, fresh=True)  # a view under 1 s old still serves
    await asyncio.sleep(1.1)
    with pytest.raises(SessionStatusUnavailable):
        await ends.check(sid, fresh=True)
    await ends.check(sid)  # reads still answer


async def test_a_page_signed_by_another_key_is_not_believed(
    gateway: ThreadedGateway, follower: Callable[..., SessionEnds], tmp_path: Path
) -> None:
    rogue_keys = KeyFile(tmp_path / "rogue.json", "ES256")
    # The gateway's kid in the header, another key's signature: what a forger in the middle could send.
    gateway_kid = KeyFile(Path(gateway.settings.keys_file), "ES256").ring.signing_key().kid
    settings = Settings(public_url=gateway.base_url, keys_file=str(tmp_path / "rogue.json"))

    async def forged(request: Request) -> Response:
        key = rogue_keys.ring.signing_key()
        payload = {
            "iss": settings.issuer,
            "iat": int(time.time()),
            "after": request.query_params.get("after", ""),
            "cursor": "9999999999999-0",
            "more": False,
            "ends": [],
        }
        signed = jws.sign({"alg": key.alg, "typ": "session-ends+jwt", "kid": gateway_kid}, payload, key)
        return Response(signed, media_type="application/jwt")

    with AppServer(Starlette(routes=[Route("/v1/session-ends", forged)])) as base:
        ends = follower(base + "/v1/session-ends")
        with pytest.raises(SessionStatusUnavailable):
            await ends.check("s" * 22, fresh=True)
    assert ends.staleness == float("inf")
