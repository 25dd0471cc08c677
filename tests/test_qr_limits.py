"""Minting has limits (issue 15, item 5): at most `qr_live_ip_max` live codes per address (an IPv6
/64) and `qr_live_max` in the whole store; a code stops counting once delivered, cancelled or
abandoned, or when it expires. Through a real server, on the memory store and on Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import new_identity
from tests.support.clients import bearer, phone_login
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

pytestmark = pytest.mark.anyio
PER_ADDRESS, IN_ALL = 3, 5


@pytest.fixture(params=["memory", "redis"])
def limited_gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadedGateway]:
    extra: dict[str, Any] = {}
    if request.param == "redis":
        extra["redis_url"] = request.getfixturevalue("redis_server").url
    port = free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("limits"), port, qr_live_ip_max=PER_ADDRESS, qr_live_max=IN_ALL, **extra
    )
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


@pytest.fixture
async def http(limited_gateway: ThreadedGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited_gateway.base_url, timeout=20) as client:
        yield client


async def mint_from(http: httpx.AsyncClient, address: str) -> httpx.Response:
    return await http.post("/v1/qr", json={"client_id": "withholding-desktop"}, headers={"X-Forwarded-For": address})


async def test_live_codes_are_capped_per_address_and_in_all(
    limited_gateway: ThreadedGateway, http: httpx.AsyncClient
) -> None:
    first = [await mint_from(http, "2001:db8:7:1::1") for _ in range(PER_ADDRESS)]
    assert [answer.status_code for answer in first] == [201] * PER_ADDRESS
    refused = await mint_from(http, "2001:db8:7:1::99")  # the same /64
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "too_many_live_codes"
    assert int(refused.headers["retry-after"]) > 0

    # Abandoned: no longer live, the address may mint again.
    gone = first[0].json()
    assert (await http.delete(f"/v1/qr/{gone['qr_id']}", headers=bearer(gone["waiter_token"]))).status_code == 204
    assert (await mint_from(http, "2001:db8:7:1::1")).status_code == 201

    # Delivered: no longer live either.
    identity = new_identity()
    limited_gateway.add_person(**identity)
    phone = await phone_login(http, identity)
    delivered = first[1].json()
    await http.post(f"/v1/qr/{delivered['qr_id']}/scan", headers=bearer(phone))
    await http.post(f"/v1/qr/{delivered['qr_id']}/confirm", headers=bearer(phone))
    state = await http.get(f"/v1/qr/{delivered['qr_id']}/state", headers=bearer(delivered["waiter_token"]))
    assert "token" in state.json()
    assert (await mint_from(http, "2001:db8:7:1::1")).status_code == 201
    assert (await mint_from(http, "2001:db8:7:1::1")).status_code == 429

    # The store's bound: 3 live from one address, 2 from another, then nobody.
    assert (await mint_from(http, "192.0.2.10")).status_code == 201
    assert (await mint_from(http, "192.0.2.10")).status_code == 201
    full = await mint_from(http, "192.0.2.11")
    assert full.status_code == 503
    assert full.json()["code"] == "qr_capacity"
    assert int(full.headers["retry-after"]) > 0
    # Cancelled by the phone: one place again.
    cancelled = first[2].json()
    await http.post(f"/v1/qr/{cancelled['qr_id']}/scan", headers=bearer(phone))
    assert (await http.post(f"/v1/qr/{cancelled['qr_id']}/cancel", headers=bearer(phone))).status_code == 204
    assert (await mint_from(http, "192.0.2.11")).status_code == 201
