"""Rare name characters by radical and residual strokes, from the committed Unihan index."""

from __future__ import annotations

import httpx
import pytest

from gateway.accounts.rare_chars import INDEX

pytestmark = pytest.mark.anyio


async def test_the_214_kangxi_radicals(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/rare-chars/radicals")
    assert response.status_code == 200
    assert "max-age" in response.headers["cache-control"]
    radicals = response.json()["radicals"]
    assert [r["number"] for r in radicals] == list(range(1, 215))
    assert radicals[0] == {"number": 1, "radical": "\u2f00", "character": "一", "strokes": 1}
    assert radicals[29] == {"number": 30, "radical": "\u2f1d", "character": "口", "strokes": 3}
    assert radicals[211] == {"number": 212, "radical": "\u2fd3", "character": "龍", "strokes": 16}
    assert radicals[213]["strokes"] == 17  # 龠
    assert all(0x2F00 <= ord(r["radical"]) <= 0x2FD5 for r in radicals)


@pytest.mark.parametrize(
    ("radical", "strokes", "character"),
    [
        (30, 3, "𠮷"),  # U+20BB7, Extension B: 口 + 3
        (212, 48, "𪚥"),  # U+2A6A5, Extension B: 龍 + 48
        (9, 5, "但"),  # the BMP
        (85, 4, "沐"),
    ],
)
async def test_characters_by_radical_and_strokes(
    http: httpx.AsyncClient, radical: int, strokes: int, character: str
) -> None:
    response = await http.get("/v1/rare-chars", params={"radical": radical, "strokes": strokes})
    assert response.status_code == 200
    body = response.json()
    assert (body["radical"], body["strokes"]) == (radical, strokes)
    assert character in body["characters"]
    assert body["characters"] == sorted(body["characters"])


@pytest.mark.parametrize(
    ("radical", "strokes", "character"),
    [
        (30, 6, "𠮷"),  # 口 (3) + 3: six strokes in all, as most people count it
        (85, 7, "沐"),  # 氵 is three strokes, not 水's four: Unihan's kTotalStrokes, not radical + residual
        (212, 64, "𪚥"),  # 龍 (16) + 48
    ],
)
async def test_characters_by_radical_and_total_strokes(
    http: httpx.AsyncClient, radical: int, strokes: int, character: str
) -> None:
    response = await http.get("/v1/rare-chars", params={"radical": radical, "strokes": strokes, "count": "total"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["radical"], body["strokes"], body["count"]) == (radical, strokes, "total")
    assert character in body["characters"]
    assert body["characters"] == sorted(body["characters"])
    residual = await http.get("/v1/rare-chars", params={"radical": radical, "strokes": strokes})
    assert residual.json()["count"] == "residual"
    assert character not in residual.json()["characters"]  # the two counts are not the same lists


async def test_later_extensions_are_included(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/rare-chars", params={"radical": 30, "strokes": 3})
    planes = {ord(ch) >> 16 for ch in response.json()["characters"]}
    assert {0, 2, 3} <= planes  # the BMP, Extension B-F (plane 2) and Extension G (plane 3)


@pytest.mark.parametrize(
    "params",
    [{}, {"radical": "0", "strokes": "1"}, {"radical": "215", "strokes": "1"}, {"radical": "30"},
     {"radical": "30", "strokes": "-1"}, {"radical": "三", "strokes": "1"}, {"radical": "30", "strokes": "81"},
     {"radical": "30", "strokes": "6", "count": "all"}, {"radical": "30", "strokes": "0", "count": "total"},
     {"radical": "30", "strokes": "101", "count": "total"}, {"radical": "30", "strokes": "6", "count": "\x00"}],
)  # fmt: skip
async def test_bad_queries_are_400(http: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await http.get("/v1/rare-chars", params=params)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")


async def test_an_empty_group_is_an_empty_list(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/rare-chars", params={"radical": 1, "strokes": 80})
    assert response.json()["characters"] == []


def test_the_index_is_compact() -> None:
    assert INDEX.stat().st_size < 300_000
