"""The household-region picker's data (GET /v1/regions): GB/T 2260 divisions in use today, a level at
a time, each marked with whether `household_region` accepts it."""

from __future__ import annotations

import httpx
import pytest

from gateway import errors, rules
from tests.support.schemas import assert_valid

pytestmark = pytest.mark.anyio


async def test_provinces_prefectures_counties(http: httpx.AsyncClient) -> None:
    provinces = await http.get("/v1/regions")
    assert provinces.status_code == 200
    assert "max-age" in provinces.headers["cache-control"]
    assert_valid("regions.json", provinces.json())
    codes = {r["code"]: r for r in provinces.json()["regions"]}
    assert len(codes) == 31  # the mainland's provinces (Taiwan, Hong Kong and Macau have no household regions here)
    assert codes["440000"] == {"code": "440000", "name": "广东省", "county_level": False}
    prefectures = (await http.get("/v1/regions", params={"parent": "440000"})).json()
    assert_valid("regions.json", prefectures)
    by_code = {r["code"]: r for r in prefectures["regions"]}
    assert by_code["440100"] == {"code": "440100", "name": "广州市", "county_level": False}
    assert by_code["441900"]["county_level"]  # 东莞市 has no counties: it is chosen itself
    counties = (await http.get("/v1/regions", params={"parent": "440100"})).json()
    assert {"code": "440106", "name": "天河区", "county_level": True} in counties["regions"]
    assert all(r["county_level"] for r in counties["regions"])
    beijing = (await http.get("/v1/regions", params={"parent": "110100"})).json()["regions"]
    assert "110105" in {r["code"] for r in beijing}
    assert "110103" not in {r["code"] for r in beijing}  # 崇文区, abolished in 2010


async def test_what_the_picker_offers_is_what_registration_accepts(http: httpx.AsyncClient) -> None:
    for province in (await http.get("/v1/regions")).json()["regions"][:4]:
        for prefecture in (await http.get("/v1/regions", params={"parent": province["code"]})).json()["regions"]:
            leaves = [prefecture]
            if not prefecture["county_level"]:
                with pytest.raises(errors.BadRequest) as caught:
                    rules.check_household_region(prefecture["code"])
                assert caught.value.code == "household_region_not_county"
                answer = await http.get("/v1/regions", params={"parent": prefecture["code"]})
                leaves = answer.json()["regions"]
            for leaf in leaves:
                assert leaf["county_level"]
                assert rules.check_household_region(leaf["code"]) == leaf["code"]


@pytest.mark.parametrize("parent", ["44", "440101", "449900", "990000", "４４００００", "440000\x00", ""])
async def test_bad_parents_are_400(http: httpx.AsyncClient, parent: str) -> None:
    response = await http.get("/v1/regions", params={"parent": parent})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
    assert response.headers["content-type"] == "application/problem+json"
