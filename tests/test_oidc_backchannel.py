"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0): a logout token to each relying party
whose session ends, whichever way it ends, delivered by real HTTP to a small relying party that records
them and checks them as a relying party must; retries after a 5xx, no retry after a 4xx, giving up,
the bounded queue, and a delivery interrupted by a shutdown handed back to the queue. (That queued
deliveries survive a gateway's SIGTERM and kill -9 is tests/test_oidc_backchannel_durable.py.)

The provider runs in the test's own event loop (tests/support/oidc.py)."""

from __future__ import annotations

import logging
import time

import pytest

from gateway.oidc.backchannel import QUEUE, BackchannelSender, DoublingBackoff
from gateway.state.memory import MemoryStore
from tests.support.gateway_server import free_port
from tests.support.oidc import (
    Browser,
    LiveProvider,
    LogoutReceiver,
    add_person,
    alive,
    app_bearer,
    counted_since,
    outcomes,
    refresh,
    register,
    sign_in,
    tokens_for,
    two_parties,
    until,
    verified_logout_token,
)

pytestmark = pytest.mark.anyio


async def test_every_way_a_relying_party_session_ends_sends_its_logout_token(
    live: LiveProvider, receiver: tuple[LogoutReceiver, str]
) -> None:
    recorder, url = receiver
    alpha, beta = await two_parties(live, url)
    plain = await register(live, "plain")  # no back-channel URI: nothing is sent for it
    subject = await add_person(live)

    async def ended_by(how: str) -> None:
        browser = Browser()
        at_alpha = await sign_in(live, browser, alpha, subject)
        at_beta = await sign_in(live, browser, beta, subject)
        await sign_in(live, browser, plain, subject)
        bearer = {"Authorization": f"Bearer {at_alpha.tokens['access_token']}"}
        phone = await app_bearer(live, subject)  # the person's sessions list is the app's
        expected = ["/bc/alpha"]
        if how == "delete the browser session":
            answer = await live.http.delete(f"/v1/sessions/{at_alpha.browser_sid}", headers=phone)
            expected = ["/bc/alpha", "/bc/beta"]
        elif how == "delete its own session":
            answer = await live.http.delete(f"/v1/sessions/{at_alpha.rp_sid}", headers=phone)
        elif how == "logout":
            answer = await live.http.post("/v1/logout", headers=bearer)
        elif how == "revoke":
            answer = await live.http.post("/v1/revoke", data={"token": at_alpha.tokens["refresh_token"]})
        else:  # refresh-token reuse: the first refresh rotates, the second use of the old one ends it
            assert (await refresh(live, at_alpha, "alpha")).status_code == 200
            answer = await refresh(live, at_alpha, "alpha")
            assert answer.json()["code"] == "refresh_token_reused"
        assert answer.status_code in (200, 204, 400), answer.text
        delivered = await tokens_for(live, recorder, len(expected))
        assert [path for path, _ in delivered] == expected, how
        for _, claims in delivered:
            assert claims["sid"] == at_alpha.browser_sid
            assert claims["sub"] == subject
        recorder.received.clear()
        assert await alive(live, at_beta.rp_sid) == (how != "delete the browser session")

    for how in ("delete the browser session", "delete its own session", "logout", "revoke", "refresh reuse"):
        await ended_by(how)


async def test_a_relying_party_answering_503_gets_the_token_again(
    live: LiveProvider, receiver: tuple[LogoutReceiver, str]
) -> None:
    recorder, url = receiver
    alpha, _ = await two_parties(live, url)
    signed_in = await sign_in(live, Browser(), alpha, await add_person(live))
    recorder.answers = [503]
    before = outcomes()
    phone = await app_bearer(live, signed_in.claims["sub"])
    assert (await live.http.delete(f"/v1/sessions/{signed_in.rp_sid}", headers=phone)).status_code == 204
    await live.services.backchannel.settled()
    assert [item.path for item in recorder.received] == ["/bc/alpha", "/bc/alpha"]
    first, second = [await verified_logout_token(live, item.logout_token) for item in recorder.received]
    assert first["jti"] != second["jti"]  # each try is signed afresh
    assert first["sid"] == second["sid"] == signed_in.browser_sid
    assert counted_since(before) == {"delivered": 1}


async def test_the_sender_gives_up_refuses_drops_and_hands_back(
    live: LiveProvider, receiver: tuple[LogoutReceiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    recorder, url = receiver
    await register(live, "alpha", backchannel_logout_uri=url + "/bc/alpha")
    await register(live, "gone", backchannel_logout_uri=f"http://127.0.0.1:{free_port()}/bc")
    settings = live.settings.model_copy(
        update={"backchannel_logout_retries": 2, "backchannel_logout_timeout": 2.0, "backchannel_logout_queue_max": 3}
    )
    store = MemoryStore()  # a queue of its own: the live provider's worker must not deliver these
    sender = BackchannelSender(
        settings,
        store,
        live.services.oidc.parties,
        lambda: live.services.oidc.ring,
        backoff=DoublingBackoff(0.01, 0.04),
    )
    sender.start()
    ended = {"sub": "p_someone", "parent": "browser-sid-0123456789"}
    caplog.set_level(logging.INFO, logger="qrgate.events")
    try:
        before = outcomes()
        recorder.answers = [503, 502, 500]  # three tries (one and two retries), all failing
        await sender.session_ended("rp-1", {**ended, "client_id": "alpha"})
        await sender.settled()
        assert len(recorder.received) == 3
        recorder.received.clear()
        recorder.answers = [400]  # refused: not asked again
        await sender.session_ended("rp-2", {**ended, "client_id": "alpha"})
        await sender.settled()
        assert len(recorder.received) == 1
        await sender.session_ended("rp-3", {**ended, "client_id": "gone"})  # nobody listening: network errors
        await sender.session_ended("rp-4", {**ended, "client_id": "unknown"})  # not a relying party
        await sender.session_ended("desktop", {"sub": "p_x", "parent": "", "client_id": "alpha"})  # no parent
        await sender.settled()
        assert counted_since(before) == {"failed": 2, "refused": 1}
        gave_up = [r for r in caplog.records if getattr(r, "outcome", "") == "failed"]
        assert [(r.levelname, getattr(r, "tries", 0)) for r in gave_up] == [("WARNING", 3), ("WARNING", 3)]
        assert all("logout_token" not in r.getMessage() for r in caplog.records)

        recorder.received.clear()
        recorder.hold.clear()  # the relying party is slow: the next deliveries stay in flight
        before = outcomes()
        for index in range(5):  # the queue holds 3: two are dropped (counted, never queued)
            await sender.session_ended(f"rp-slow-{index}", {**ended, "client_id": "alpha"})
        assert counted_since(before) == {"dropped": 2}
        assert await store.queued(QUEUE) == 3
        await until(lambda: len(recorder.received) == 3)
    finally:
        await sender.close()  # the deliveries in flight are cancelled and handed back, due now
    assert counted_since(before) == {"dropped": 2}
    now_due = await store.claim_due(QUEUE, time.time(), 30, 10)
    assert sorted(item_id for item_id, _ in now_due) == ["rp-slow-0", "rp-slow-1", "rp-slow-2"]


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = DoublingBackoff(first=1.0, cap=8.0)
    for failures, full in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        waits = [backoff.compute(failures) for _ in range(50)]
        assert all(full / 2 <= wait <= full for wait in waits)
    backoff.reset()


async def test_a_relying_partys_token_cannot_see_or_end_the_persons_sessions(live: LiveProvider) -> None:
    """The sessions list is the person's own apps' (scope `sessions`): a relying party holding an access
    token of theirs gets 403 insufficient_scope, and every session lives on."""
    party = await register(live, "nosy-rp")
    subject = await add_person(live)
    signed_in = await sign_in(live, Browser(), party, subject)
    bearer = {"Authorization": f"Bearer {signed_in.tokens['access_token']}"}
    for answer in (
        await live.http.get("/v1/sessions", headers=bearer),
        await live.http.delete(f"/v1/sessions/{signed_in.browser_sid}", headers=bearer),
    ):
        assert (answer.status_code, answer.json()["code"]) == (403, "insufficient_scope")
        assert answer.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="sessions"'
    assert await alive(live, signed_in.browser_sid)
    assert await alive(live, signed_in.rp_sid)
    listed = await live.http.get("/v1/sessions", headers=await app_bearer(live, subject))
    assert {s["sid"] for s in listed.json()["sessions"]} >= {signed_in.browser_sid, signed_in.rp_sid}
