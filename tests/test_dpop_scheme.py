"""The DPoP authorization scheme only with a key-bound token and exactly one proof (issue 15, item 8),
at the gateway and at a service using qrgate_verify (the mounted units service): an unbound token
under `DPoP` is refused (it claims a binding it does not have), two DPoP headers are 400, a bound
token under `Bearer` stays refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.clients import bearer, mint, phone_login
from tests.support.dpop import DpopKey
from tests.support.gateway_server import ThreadedGateway

pytestmark = pytest.mark.anyio
PATHS = ("/v1/sessions", "/units/v1/units")


async def bound_desktop(http: httpx.AsyncClient, phone: str, key: DpopKey) -> str:
    minted = await mint(http, dpop_jkt=key.jkt)
    await http.post(f"/v1/qr/{minted['qr_id']}/scan", headers=bearer(phone))
    await http.post(f"/v1/qr/{minted['qr_id']}/confirm", headers=bearer(phone))
    state = await http.get(f"/v1/qr/{minted['qr_id']}/state", headers=bearer(minted["waiter_token"]))
    token = state.json()["token"]
    assert token["token_type"] == "DPoP"
    access: str = token["access_token"]
    return access


async def test_the_dpop_scheme_needs_a_bound_token_and_one_proof(gateway: ThreadedGateway, make_person: Any) -> None:
    key = DpopKey()
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as http:
        phone = await phone_login(http, make_person())
        desktop = await bound_desktop(http, phone, key)
        for path in PATHS:
            url = gateway.base_url + path
            # An unbound token under the DPoP scheme, with or without a proof.
            for extra in ({}, {"DPoP": key.proof("GET", url, phone)}):
                claimed = await http.get(path, headers={"Authorization": f"DPoP {phone}", **extra})
                assert (claimed.status_code, claimed.json()["code"]) == (401, "invalid_token"), (path, claimed.text)
            assert (await http.get(path, headers=bearer(phone))).status_code == 200, path
            # A bound token: two DPoP headers are refused whatever they hold, one right proof passes.
            two = await http.get(
                path,
                headers=[
                    ("Authorization", f"DPoP {desktop}"),
                    ("DPoP", key.proof("GET", url, desktop)),
                    ("DPoP", key.proof("GET", url, desktop)),
                ],
            )
            assert (two.status_code, two.json()["code"]) == (400, "invalid_dpop_proof"), (path, two.text)
            assert two.headers["content-type"] == "application/problem+json"
            under_bearer = await http.get(path, headers={**bearer(desktop), "DPoP": key.proof("GET", url, desktop)})
            assert under_bearer.status_code == 401, path
            one = await http.get(
                path, headers={"Authorization": f"DPoP {desktop}", "DPoP": key.proof("GET", url, desktop)}
            )
            assert one.status_code == 200, (path, one.text)
